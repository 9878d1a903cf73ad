"""Datasets: their facts, their files, the DataModule, and a run's resolution of them.

    datasets.py   DatasetInfo and DATASETS: each named dataset's facts, written once (classes, names,
                  statistics, image size, display name, where its files are found)
    files.py      reading the files: NumPy archives and torchvision's downloads, as uint8 tensors
    module.py     ImageDataModule: the splits in memory, batches made float (and augmented) on their device
    facts.py      a run's dataset facts resolved once (config, then checkpoint, then files), and the check
                  that a model fits the data
"""

from advlab.data.datasets import (CIFAR100_CLASS_NAMES, CLASS_NAMES, DATASET_NAMES, DATASETS, METADATA_KEYS,
                                  NUM_CLASSES, DatasetInfo, class_index, dataset_info, digits, metadata, resolve_root)
from advlab.data.facts import check_model_on_data, checkpoint_classes, resolve_dataset
from advlab.data.files import (SOURCES, DataError, channel_stats, load_npz_files, load_split, read_npz,
                               to_unit_float)
from advlab.data.module import CIFAR10DataModule, ImageDataModule

__all__ = ["CIFAR100_CLASS_NAMES", "CLASS_NAMES", "DATASET_NAMES", "DATASETS", "METADATA_KEYS", "NUM_CLASSES",
           "DatasetInfo", "class_index", "dataset_info", "digits", "metadata", "resolve_root", "check_model_on_data",
           "checkpoint_classes", "resolve_dataset", "SOURCES", "DataError", "channel_stats", "load_npz_files",
           "load_split", "read_npz", "to_unit_float", "CIFAR10DataModule", "ImageDataModule"]
