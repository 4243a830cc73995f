"""Datasets: static images (Fashion-MNIST, MNIST, CIFAR-10/100, TinyImageNet) and event streams
(N-MNIST, CIFAR10-DVS, CONVERTED Fashion-MNIST) behind one call, :func:`get_dataset`.

Static items are ``(x float32 [C, H, W], y int)``; event items ``(x float32 [T, 2, H, W], y int)``.
Every dataset also has ``__getitems__(indices)`` returning a stacked batch ``(x [B, ...], y int64 [B])``.
Datasets are found in ``$SNNLIB_DATA``, ``<repo>/data``, ``./data``, then ``/usr/share/datasets``
(Fashion-MNIST from the Debian package ``dataset-fashion-mnist``), then downloaded when reachable;
otherwise :class:`DatasetNotFound` says where it looked and how to get the data.
:func:`fetch.ensure` (``python -m snnlib data``) installs or downloads what a scale needs, up front.
"""
from .batch_transforms import BatchTransform
from .convert import EVENT_DTYPE, ConvertedEvents, SaccadeConfig, saccade_events
from .events import EventFrameDataset, to_frames
from .fetch import DataMissing, ensure
from .locate import DatasetNotFound, cache_dir, network_available
from .registry import dataset_info, dataset_names, get_dataset
from .tensor_dataset import SubsetDataset, TensorImageDataset, random_subset
from .vision import ImageFileDataset

__all__ = [
    "get_dataset", "dataset_info", "dataset_names", "DatasetNotFound",
    "TensorImageDataset", "ImageFileDataset", "EventFrameDataset", "SubsetDataset", "random_subset",
    "BatchTransform", "saccade_events", "SaccadeConfig", "ConvertedEvents", "EVENT_DTYPE", "to_frames",
    "cache_dir", "network_available", "DataMissing", "ensure",
]
