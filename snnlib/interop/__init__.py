"""Interoperability with other SNN frameworks: NIR export and import (``snnlib.interop.nir``)."""
from .nir import NIRNetwork, from_nir, peer_agreement, peer_options, run_peer, to_nir

__all__ = ["to_nir", "from_nir", "NIRNetwork", "peer_options", "run_peer", "peer_agreement"]
