"""Test session settings: quiet OpenMP threads (spinning workers make 2-core runs erratic)."""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("MPLBACKEND", "Agg")
