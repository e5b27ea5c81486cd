"""Shared test setup: deterministic random numbers for every test."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_torch():
    torch.manual_seed(0)
    yield
