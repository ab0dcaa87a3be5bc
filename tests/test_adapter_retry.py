"""The adapters' out-of-memory retry (adapters/base.py run_train), with the framework replaced by a
step that runs out of memory: the retry halves the batch once, and it starts only once the
failed attempt's memory can be freed (the handler has ended, the failing frame is gone)."""

from __future__ import annotations

import sys
import weakref

import pytest

from adapters.base import TrainingAdapter

pytestmark = pytest.mark.shared_envs  # its homes reuse the session's framework envs (tests/envcache.py)


class OutOfMemoryError(RuntimeError):
    """Named as torch's (torch.cuda.OutOfMemoryError): what is_oom() recognises without torch here."""


class Activations:
    """Stands for a step's big tensors: a weakref tells whether anything still holds them."""

    def __init__(self):
        self.data = bytearray(32 << 20)


class Fake(TrainingAdapter):
    """An adapter whose training step runs out of memory above batch size 4."""

    framework = "fake"
    log: list = []  # (batch_size, what happened), across attempts
    held: list = []  # weakrefs to each attempt's model and to each failed step's activations

    def prepare_dataset(self):
        alive = [ref() is not None for ref in self.held]
        self.log.append((self.batch_size, "start", sys.exc_info()[0] is not None, alive))

    def prepare_model(self):
        self.model = Activations()  # the attempt's model: release() drops it
        self.held.append(weakref.ref(self.model))

    def fit(self):
        self.step()
        self.log.append((self.batch_size, "trained"))

    def step(self):
        acts = Activations()  # held by this frame, and so by the traceback of what it raises
        self.held.append(weakref.ref(acts))
        if self.batch_size > 4:
            raise OutOfMemoryError(f"CUDA out of memory. Tried to allocate {len(acts.data)} bytes (batch_size {self.batch_size})")


@pytest.fixture
def fake(tmp_path):
    Fake.log, Fake.held = [], []
    return lambda **cfg: Fake({"output_dir": str(tmp_path), "epochs": 1, **cfg})


def test_out_of_memory_retries_once_with_half_the_batch_after_the_failed_step_is_freed(fake, capsys):
    assert fake(batch_size=8, auto_batch_size=True).run_train() == 0
    first, retry, done = Fake.log
    assert first == (8, "start", False, [])
    # the retry's start: no exception being handled, the first model and the failed step's activations freed
    assert retry == (4, "start", False, [False, False]), retry
    assert done == (4, "trained")
    assert "runner: out of memory at batch_size=8; retrying once with batch_size=4 (auto_batch_size)" in capsys.readouterr().out


def test_out_of_memory_without_auto_batch_size_or_twice_is_raised(fake):
    with pytest.raises(OutOfMemoryError):
        fake(batch_size=8).run_train()
    assert [e[:2] for e in Fake.log] == [(8, "start")]
    Fake.log = []
    with pytest.raises(OutOfMemoryError, match="batch_size 10"):  # 20 -> 10 still fails: not retried again
        fake(batch_size=20, auto_batch_size=True).run_train()
    assert [e[:2] for e in Fake.log] == [(20, "start"), (10, "start")]
