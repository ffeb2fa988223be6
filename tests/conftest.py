"""Shared fixtures: the embedded tiny model loaded once, offline hub, two CPU threads."""

from __future__ import annotations

import copy
import os

# before anything imports huggingface_hub: it reads the offline flag at import time
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from r1kit.modeling import load_tokenizer

    return load_tokenizer(None)


@pytest.fixture(scope="session")
def tiny_model_base():
    """The embedded model as loaded; never train this one, take `tiny_model` instead."""
    from r1kit.modeling import load_model

    return load_model(None).eval()


@pytest.fixture
def tiny_model(tiny_model_base):
    """A fresh, trainable copy of the embedded model for one test."""
    return copy.deepcopy(tiny_model_base).train()


@pytest.fixture(scope="module")
def one_thread():
    """The CPU is shared; tiny models gain nothing from more threads. Modules opt in with
    `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
