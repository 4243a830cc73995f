"""Bad input is refused with an error naming the problem: non-finite or mistyped batches (every
method), online methods recovering after a failed call, unsafe or altered dataset archives,
solver options of another solver, unreadable result files."""
import io
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch

from snnlib.data import get_dataset
from snnlib.data.events import extract_zip
from snnlib.data.locate import BadArchive, file_md5, safe_extract
from snnlib.experiments.config import ConfigError, load_config
from snnlib.experiments.io import CorruptFile, load_torch, read_json, save_torch, write_json
from snnlib.methods import build_method, method_names
from snnlib.methods.base import check_batch
from snnlib.models import build_model
from snnlib.online import TraceSynapse
from snnlib.train import build

RUNS = Path(__file__).resolve().parents[1] / "configs" / "runs"


# --- batches: one check before any method does anything -------------------------------------------

def fmnist_config(method: str) -> dict:
    """The first Fashion-MNIST run config of ``method`` in configs/runs (every method has one)."""
    for path in sorted(RUNS.glob("*.yaml")):
        cfg = load_config(path)
        if cfg["method"] == method and cfg["data"]["name"] == "fashion_mnist":
            return cfg
    raise AssertionError(f"no Fashion-MNIST run config for method {method!r} in {RUNS}")


def bad_batches(B=2):
    x = torch.rand(B, 1, 28, 28)
    nan, inf = x.clone(), x.clone()
    nan[0, 0, 3, 4] = float("nan")
    inf[1, 0, 0, 0] = -float("inf")
    return {"NaN": (nan, ValueError, r"non-finite values \(1 NaN, 0 inf"),
            "inf": (inf, ValueError, r"non-finite values \(0 NaN, 1 inf"),
            "float64": (x.double(), TypeError, "inputs are torch.float64 but the model's parameters are torch.float32")}


@pytest.mark.parametrize("name", method_names())
def test_every_method_refuses_non_finite_and_mistyped_inputs_before_touching_the_model(name):
    torch.manual_seed(0)
    _, method = build(fmnist_config(name))
    opt = torch.optim.SGD(method.net.parameters(), lr=0.1)
    before = [p.detach().clone() for p in method.net.parameters()]
    y = torch.tensor([1, 2])
    for kind, (x, err, match) in bad_batches().items():
        with pytest.raises(err, match=match):
            method.predict(x)
        with pytest.raises(err, match=match):
            method.train_step(x, y, opt)
    assert all(torch.equal(a, p) for a, p in zip(before, method.net.parameters()))


def test_check_batch_names_labels_and_sizes():
    x = torch.zeros(3, 1, 4, 4)
    with pytest.raises(TypeError, match="floating-point"):
        check_batch(x.long(), torch.zeros(3, dtype=torch.long))
    with pytest.raises(TypeError, match="labels must be an integer tensor"):
        check_batch(x, torch.zeros(3))
    with pytest.raises(ValueError, match=r"batch size mismatch: inputs \(3, 1, 4, 4\) vs labels \(2,\)"):
        check_batch(x, torch.zeros(2, dtype=torch.long))
    check_batch(x, torch.zeros(3, dtype=torch.long), model=torch.nn.Linear(2, 2))   # a good batch passes


# --- online methods recover after a failed call ----------------------------------------------------

INFO = {"channels": 1, "size": (28, 28), "num_classes": 10}


def online_pair(name, dtype):
    """Two identical SAF methods (same weights) on tiny online nets, and an SGD optimiser for each."""
    out = []
    for _ in range(2):
        torch.manual_seed(0)
        m = build_method(name, build_model({"name": "online_conv", "cfg": "tiny"}, INFO).to(dtype), T=3)
        out.append((m, torch.optim.SGD(m.net.parameters(), lr=0.05)))
    return out


def batch(dtype, n=4):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 1, 28, 28, generator=g).to(dtype), torch.randint(0, 10, (n,), generator=g)


def fail_at_second_step(net):
    """A forward hook on the network's last synapse that raises at the second time step."""
    calls = []
    last = [m for m in net.modules() if isinstance(m, TraceSynapse)][-1]

    def hook(*_):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("interrupted mid-batch")
    return last.register_forward_hook(hook)


@pytest.mark.parametrize("name", ["saf_e", "saf_f"])
def test_saf_after_a_refused_float64_batch_works_as_a_fresh_model(name):
    (m, opt), (fresh, fresh_opt) = online_pair(name, torch.float32)
    x, y = batch(torch.float32)
    with pytest.raises(TypeError, match="torch.float64"):
        m.predict(x.double())
    assert torch.equal(m.predict(x), fresh.predict(x))
    assert m.train_step(x, y, opt) == fresh.train_step(x, y, fresh_opt)
    assert all(torch.equal(a, b) for a, b in zip(m.net.parameters(), fresh.net.parameters()))


@pytest.mark.parametrize("name", ["saf_e", "saf_f", "ottt_a"])
def test_online_state_is_reset_when_a_call_fails_mid_batch(name, f64):
    (m, opt), (fresh, fresh_opt) = online_pair(name, torch.float64)
    x, y = batch(torch.float64)
    handle = fail_at_second_step(m.net)
    with pytest.raises(KeyboardInterrupt):
        m.predict(x)
    handle.remove()
    assert torch.equal(m.predict(x), fresh.predict(x))
    handle = fail_at_second_step(m.net)
    with pytest.raises(KeyboardInterrupt):
        m.per_step_grads(x, y)
    handle.remove()
    for a, b in zip(m.per_step_grads(x, y), fresh.per_step_grads(x, y)):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert m.train_step(x, y, opt) == fresh.train_step(x, y, fresh_opt)


# --- archives: checksum first, nothing outside the folder ------------------------------------------

def write_tar(path: Path, members: dict, links: dict | None = None) -> Path:
    """A .tar.gz holding ``members`` (name -> bytes) and symbolic ``links`` (name -> target)."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return path


def write_zip(path: Path, members: dict) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def test_safe_extract_unpacks_ordinary_tar_and_zip_archives(tmp_path):
    members = {"top/a.txt": b"a", "top/sub/b.txt": b"b"}
    for archive in (write_tar(tmp_path / "ok.tar.gz", members), write_zip(tmp_path / "ok.zip", members)):
        dest = tmp_path / archive.name.split(".")[0] / archive.suffix.strip(".")
        safe_extract(archive, dest, md5=file_md5(archive))
        assert (dest / "top" / "a.txt").read_bytes() == b"a" and (dest / "top" / "sub" / "b.txt").read_bytes() == b"b"


@pytest.mark.parametrize("kind,member", [("tar", "../escaped.txt"), ("tar", "ok/../../escaped.txt"),
                                         ("zip", "../escaped.txt"), ("tar", "{abs}/escaped.txt")])
def test_members_outside_the_folder_are_refused_before_anything_is_written(tmp_path, kind, member):
    member = member.format(abs=tmp_path)
    dest = tmp_path / "data"
    content = {"fine.txt": b"x", member: b"evil"}
    archive = write_tar(tmp_path / "a.tar.gz", content) if kind == "tar" else write_zip(tmp_path / "a.zip", content)
    with pytest.raises(BadArchive, match=f"archive {archive} was not extracted: member .*escaped.txt"):
        safe_extract(archive, dest)
    assert not (tmp_path / "escaped.txt").exists() and not (dest / "fine.txt").exists()


def test_links_pointing_outside_the_folder_are_refused(tmp_path):
    archive = write_tar(tmp_path / "l.tar.gz", {}, links={"inside/link": "../../outside"})
    with pytest.raises(BadArchive, match="links to '../../outside', outside the target folder"):
        safe_extract(archive, tmp_path / "data")


def test_a_wrong_checksum_is_refused_naming_the_archive(tmp_path):
    archive = write_tar(tmp_path / "a.tar.gz", {"a.txt": b"a"})
    with pytest.raises(BadArchive, match=f"archive {archive} has md5 {file_md5(archive)}, not the known 0+"):
        safe_extract(archive, tmp_path / "data", md5="0" * 32)
    assert not (tmp_path / "data" / "a.txt").exists()


def test_a_cifar_archive_in_a_data_folder_is_checked_before_extraction(data_env, monkeypatch):
    import torchvision.datasets as tvd
    data = data_env / "data"
    archive = write_tar(data / tvd.CIFAR10.filename, {"cifar-10-batches-py/batches.meta": b"x",
                                                      "../../escaped.txt": b"evil"})
    with pytest.raises(BadArchive, match=f"archive {archive} has md5 .*not the known {tvd.CIFAR10.tgz_md5}"):
        get_dataset("cifar10", "train")
    monkeypatch.setattr(tvd.CIFAR10, "tgz_md5", file_md5(archive))   # as if it were the original
    with pytest.raises(BadArchive, match=f"archive {archive} was not extracted: member '../../escaped.txt'"):
        get_dataset("cifar10", "train")
    assert not (data_env / "escaped.txt").exists() and not (data / "cifar-10-batches-py").exists()


def test_event_zips_refuse_members_outside_the_folder(tmp_path):
    archive = write_zip(tmp_path / "test.zip", {"Test/0/00000.bin": b"", "../../escaped.bin": b"evil"})
    with pytest.raises(BadArchive, match=f"archive {archive} was not extracted"):
        extract_zip(archive, tmp_path / "data" / "NMNIST")
    assert not (tmp_path / "escaped.bin").exists() and not (tmp_path / "data" / "NMNIST" / "Test").exists()


# --- solver options belong to the chosen solver ------------------------------------------------------

SMALL = {"channels": 1, "size": (4, 5), "num_classes": 3}


@pytest.mark.parametrize("backward,options,match", [
    ("anderson", {"memory": 27}, r"'memory' is not an option of the anderson solver.*Valid: beta, lam, m"),
    ("fixed_point", {"m": 6}, "'m' is not an option of the fixed_point solver"),
    ("broyden", {"tol": 1e-3}, "'tol' is a method argument, not a solver option"),
    ("one_step", {"memory": 27}, "backward 'one_step' runs no iterative solver"),
])
def test_solver_options_of_another_solver_are_refused_when_the_method_is_built(backward, options, match):
    net = build_model({"name": "ide_fc", "hidden": 8}, SMALL)
    with pytest.raises(ConfigError, match=match):
        build_method("ide", net, T=3, backward=backward, solver_options=options)
    for ok in ({"memory": 5}, None):
        build_method("ide", net, T=3, backward="broyden", solver_options=ok)


# --- result files: unreadable ones are named ---------------------------------------------------------

def test_truncated_result_json_names_the_file(tmp_path):
    path = tmp_path / "result.json"
    write_json(path, {"final": {"test_acc": 0.5}, "history": [1, 2, 3]})
    assert read_json(path)["final"]["test_acc"] == 0.5
    path.write_text(path.read_text()[:20])
    with pytest.raises(CorruptFile, match=f"{path} is not valid JSON .*truncated or corrupted"):
        read_json(path)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_corrupt_checkpoint_names_the_file_and_never_suggests_unsafe_loading(tmp_path, damage):
    path = tmp_path / "checkpoint.pt"
    save_torch(path, {"model": {"w": torch.ones(64)}})
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2] if damage == "truncated" else b"not a checkpoint" * 10)
    with pytest.raises(CorruptFile, match=f"{path} cannot be read as a checkpoint") as err:
        load_torch(path)
    assert "weights_only" not in str(err.value)
