"""Shared fixtures. Everything is CPU-only and offline."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from vs2_export.store import store_array


def synthetic_activations(n: int = 2048, d: int = 32, rank: int = 8, seed: int = 0) -> np.ndarray:
    """h [n, d]: a sparse combination of `rank * 4` fixed directions plus noise and an offset,
    the kind of data a top-k SAE can reconstruct well."""
    rng = np.random.default_rng(seed)
    atoms = rng.standard_normal((rank * 4, d))
    codes = rng.random((n, rank * 4)) * (rng.random((n, rank * 4)) < 0.15)
    return (codes @ atoms + 3.0 + 0.01 * rng.standard_normal((n, d))).astype(np.float32)


class ModuleTmp:
    """tmp_path_factory for a module's fixtures, whose folders go when the module ends: the
    full-size exports (ViT-B-32, ViT-H-14 over 2 GB) would otherwise pile up until the session
    ends, on a disk that CI shares with other jobs."""

    def __init__(self, factory: pytest.TempPathFactory):
        self.factory, self.made = factory, []

    def mktemp(self, name: str):
        self.made.append(self.factory.mktemp(name))
        return self.made[-1]

    def cleanup(self) -> None:
        for folder in self.made:
            shutil.rmtree(folder, ignore_errors=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The full-size modules first (ViT-H-14 alone takes ~5 min): under `make test`'s two
    xdist workers (--dist loadfile --no-loadscope-reorder) one of them starts on it while the
    other takes the many small modules, instead of one worker running it alone at the end. A
    stable sort, so each module's tests stay together and in order."""
    items.sort(key=lambda item: item.get_closest_marker("full") is None)


@pytest.hookimpl(wrapper=True)
def pytest_report_to_serializable(report):
    """An xdist worker sends each report to the controller through execnet, which refuses a str
    holding a lone surrogate: a non-UTF-8 file name (os.fsdecode(b"m_\\xff")) in a captured log
    line or a failure message ended the whole run with INTERNALERROR. Such characters are sent
    escaped (\\udcff); nothing else changes."""
    return _utf8_safe((yield))


def _utf8_safe(value):
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_utf8_safe(k): _utf8_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_utf8_safe(v) for v in value)
    return value


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory):
    """Like tmp_path_factory, for module-scoped fixtures; removed at the module's end."""
    tmp = ModuleTmp(tmp_path_factory)
    yield tmp
    tmp.cleanup()


@pytest.fixture
def store(tmp_path):
    """A small activation store of synthetic h [2048, 32]."""
    return store_array(tmp_path / "acts", synthetic_activations(), "test-model", "none",
                       shard_size=700)


@pytest.fixture
def one_thread():
    """Tiny tensors: one thread is fastest, and immune to other jobs on the 2 shared cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def demo_work(tmp_path_factory):
    """SAE + steering + classes for the demo model, built once per test session."""
    from pipeline import demo_parts

    from vs2_export.demo.data import CLASSES
    return demo_parts(tmp_path_factory.mktemp("demo_parts"), list(CLASSES))


@pytest.fixture(scope="session")
def rgb_export(demo_work):
    """A REAL demo export with the portable contract: image_rgb input, classes at run time
    (class_embeddings, text.onnx), reference vectors, and an int8 variant (static, calibrated
    through the image_rgb graph with every input fed). Shared by the Python and JS tests."""
    from pipeline import export_demo
    return export_demo(demo_work, demo_work / "rgb", pixel_input="image_rgb",
                       precisions=("fp32", "int8"), calibration=demo_work / "unlabeled",
                       calibration_max=16)


@pytest.fixture(scope="session")
def float_export(demo_work):
    """The same SAE and steering exported with pixel_values input: the PIL path's twin."""
    from pipeline import export_demo
    return export_demo(demo_work, demo_work / "float")
