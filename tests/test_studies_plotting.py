"""Figure layout helpers: legends sit outside the data area, ticks say what they measure."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from snnlib.studies.plotting import integer_ticks, legend_below, legend_right, log_ticks_at, plain_log_labels  # noqa: E402


def _drawn(fig):
    fig.canvas.draw()
    return fig.canvas.get_renderer()


def test_legend_right_keeps_every_entry_and_sits_right_of_the_axes():
    fig, ax = plt.subplots()
    ax.plot([1, 2], [1, 2], label="a")
    ax.legend(title="series")
    ax.plot([1, 2], [2, 1], label="b")          # drawn after the first legend: must not be lost
    legend_right(ax)
    r = _drawn(fig)
    leg = ax.get_legend()
    assert [t.get_text() for t in leg.get_texts()] == ["a", "b"]
    assert leg.get_title().get_text() == "series"
    assert leg.get_window_extent(r).x0 >= ax.get_window_extent(r).x1
    plt.close(fig)


def test_legend_below_sits_under_the_axes():
    fig, ax = plt.subplots()
    (line,) = ax.plot([1, 2], [1, 2])
    fig.tight_layout()
    legend_below(fig, [line], ["a"])
    r = _drawn(fig)
    assert fig.legends[0].get_window_extent(r).y1 <= ax.get_window_extent(r).y0
    plt.close(fig)


def test_epoch_ticks_are_whole_numbers_even_for_a_single_epoch():
    for epochs in ([1], [1, 2, 3, 4]):
        fig, ax = plt.subplots()
        ax.plot(epochs, [0.5] * len(epochs), "o")
        integer_ticks(ax)
        _drawn(fig)
        lo, hi = ax.get_xlim()
        shown = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert shown and all(float(t).is_integer() for t in shown)
        plt.close(fig)


def test_log_axes_are_labelled_with_plain_numbers():
    fig, ax = plt.subplots()
    ax.plot([1, 2, 4, 16], [17, 30, 60, 250])
    ax.set(xscale="log", yscale="log")
    log_ticks_at(ax, [1, 2, 4, 16], "x")
    plain_log_labels(ax, "y")
    _drawn(fig)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "4", "16"]
    labels = [t.get_text() for t in ax.get_yticklabels() + ax.get_yticklabels(minor=True) if t.get_text()]
    assert "100" in labels and all("times" not in s and "^" not in s for s in labels)
    plt.close(fig)
