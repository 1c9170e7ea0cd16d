"""Shared pytest set-up: hypothesis profiles and the device list."""

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

# "ci": no deadline (shared, noisy machines), few examples per property so the whole
# suite stays within minutes on 2 cores. "dev": more examples for a deeper local run
# (HYPOTHESIS_PROFILE=dev).
settings.register_profile(
    "ci", max_examples=25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("dev", max_examples=200, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(autouse=True)
def _scratchnet_recording_on():
    """Every test starts with scratchnet's tape recording."""
    from scratchnet.autodiff import _Recording

    _Recording.on = True
    yield
    _Recording.on = True
