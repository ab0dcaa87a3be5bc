"""One contract, both GPU inventories: what the scheduler and the daemon rely on from any of them.

InventoryContract is run against the static inventory here and against NVML where a GPU and its
driver are present (skipped otherwise, with the reason)."""

from __future__ import annotations

import json

import pytest

from runner.gpus import GPU, Inventory, NvmlInventory, StaticInventory, free_gpus


class InventoryContract:
    """Subclasses give `inventory()`; every test here must hold for every implementation."""

    def inventory(self) -> Inventory:
        raise NotImplementedError

    def test_says_what_it_is_and_whether_it_works(self):
        inv = self.inventory()
        assert isinstance(inv.source, str) and inv.source and isinstance(inv.available, bool)
        assert isinstance(inv.reason, str) and inv.reason

    def test_gpus_are_unique_sorted_and_consistent(self):
        gpus = self.inventory().gpus()
        assert gpus, "the contract is checked on at least one GPU"
        assert all(isinstance(g, GPU) for g in gpus)
        assert [g.index for g in gpus] == sorted(g.index for g in gpus)
        assert len({g.uuid for g in gpus}) == len(gpus) and all(g.uuid.startswith("GPU-") for g in gpus)
        for g in gpus:
            assert g.memory_total_mb > 0 and 0 <= g.memory_used_mb <= g.memory_total_mb
            assert g.memory_free_mb == pytest.approx(g.memory_total_mb - g.memory_used_mb)
            assert g.utilization is None or 0 <= g.utilization <= 100
            assert all({"pid", "used_mb"} <= set(p) for p in g.processes)
            d = g.as_dict()
            json.dumps(d)  # views serialise it as it is
            assert d["memory_free_mb"] == pytest.approx(g.memory_free_mb)

    def test_sample_gives_the_asked_gpus_only(self):
        inv = self.inventory()
        gpus = inv.gpus()
        first = gpus[0].uuid
        assert set(inv.sample([first])) == {first}
        assert inv.sample(["GPU-not-there"]) == {}

    def test_free_gpus_leaves_out_held_and_busy_ones(self):
        gpus = self.inventory().gpus()
        g0 = gpus[0]
        assert g0 not in free_gpus(gpus, {g0.uuid: "somejob"}, set())
        busy = [GPU(g.index, g.uuid, g.name, g.memory_total_mb, g.memory_total_mb, g.utilization) for g in gpus]
        assert free_gpus(busy, {}, set()) == []


class TestStaticInventory(InventoryContract):
    def inventory(self):
        return StaticInventory([{"name": "A", "memory_mb": 16384, "uuid": "GPU-a", "used_mb": 100, "utilization": 3,
                                 "processes": [{"pid": 1, "used_mb": 100, "user": "root"}]},
                                {"name": "B", "memory_mb": 81920, "uuid": "GPU-b"}])


class TestNvmlInventory(InventoryContract):
    def inventory(self):
        inv = NvmlInventory()
        if not inv.available or not inv.gpus():
            pytest.skip(f"no NVML here ({inv.reason})")
        return inv
