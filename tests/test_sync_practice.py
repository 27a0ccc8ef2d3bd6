"""bnlib.training.sync_practice: the SyncBatchNorm demonstrations, run once on 4 CPU processes (gloo)."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from synthetic import synthetic_mnist

from bnlib.training.distributed import run_on_processes
from bnlib.training.sync_practice import (
    PAIRS,
    WORLD_SIZE,
    buffer_broadcast,
    count_collectives,
    practice_demos,
)

STEPS, BATCH, TIMEOUT_S = 12, 8, 2.0
TRAIN = synthetic_mnist(STEPS * BATCH, seed=3)
INPUTS = torch.randn(WORLD_SIZE, 5, 3, dtype=torch.float64,
                     generator=torch.Generator().manual_seed(4)) * 2 + 1
IMAGES = torch.rand(WORLD_SIZE, 3, 1, 28, 28, generator=torch.Generator().manual_seed(5))


@pytest.fixture(scope="module")
def demos():
    return run_on_processes(practice_demos, WORLD_SIZE, TRAIN, INPUTS, IMAGES, STEPS, BATCH, 0,
                            TIMEOUT_S)


def test_conversion_after_wrapping_swaps_layers_inside_the_wrapper(demos):
    for result in demos[:2]:
        seen = result["conversion"]
        assert "only work with GPU modules" in seen["torch_before"]  # DDP's check, on the CPU
        assert seen["torch_after_returns_wrapper"] and seen["torch_after_shares_weight"]
        assert seen["torch_after_layer"] == "SyncBatchNorm"
        assert "expected input tensor to be on GPU" in seen["torch_after_forward"]
        assert seen["bnlib_before_losses"] == seen["bnlib_after_losses"]
        assert seen["bnlib_weights_equal"]


def test_a_skipped_forward_times_out_on_the_waiting_process(demos):
    waiting, finished = demos[0]["skipped"], demos[1]["skipped"]
    assert (waiting["batches"], waiting["steps"]) == (3, 2)
    assert "Timed out" in waiting["error"] and waiting["waited_s"] >= 0.9 * TIMEOUT_S
    assert finished == {"batches": 2, "steps": 2}


def test_equal_counts_finish_and_join_raises_everywhere(demos):
    equal = [result["equal_counts"] for result in demos[:2]]
    assert [e["steps"] for e in equal] == [2, 2] and [e["batches"] for e in equal] == [3, 2]
    torch.testing.assert_close(equal[0]["running_mean"], equal[1]["running_mean"])
    for result in demos[:2]:
        assert result["join"]["steps"] == 2 and "exhausted" in result["join"]["error"]
    assert all("conversion" not in result for result in demos[2:])  # the second pair waits


def test_pair_groups_normalise_over_the_pair_only(demos):
    whole = F.batch_norm(INPUTS.flatten(0, 1), None, None, training=True)
    for pair in PAIRS:
        expected = F.batch_norm(INPUTS[pair].flatten(0, 1), None, None, training=True)
        got = torch.cat([demos[rank]["pairs"]["pair_output"] for rank in pair])
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
        for rank in pair:  # running variance: momentum 0.1 towards the pair's unbiased variance
            torch.testing.assert_close(demos[rank]["pairs"]["pair_running_var"],
                                       0.9 + 0.1 * INPUTS[pair].flatten(0, 1).var(0))
    world = torch.cat([result["pairs"]["world_output"] for result in demos])
    torch.testing.assert_close(world, whole, rtol=1e-10, atol=1e-10)


def test_communication_counts_match_the_tensor_sizes(demos):
    traffic = demos[0]["communication"]
    channels = traffic["bn_channels"]
    assert channels == [16, 32]
    assert traffic["sync_calls"] == (
        [("all_gather", 3 * c * 8) for c in channels]  # count, mean, squares in float64
        + [("all_reduce", 2 * c * 4) for c in reversed(channels)])  # backward, last layer first
    assert sum(traffic["gradient_buckets"]) == traffic["parameter_bytes"]
    assert traffic["buffer_bytes"] == sum(4 * 2 * c + 8 for c in channels)  # + the step count


def test_buffer_broadcast_copies_rank_zero_and_pools_nothing(demos):
    zero, one = (result["buffers"] for result in demos[:2])
    assert torch.equal(zero[True]["before_forward"], one[True]["before_forward"])
    assert not torch.equal(zero[False]["before_forward"], one[False]["before_forward"])
    assert torch.equal(zero[True]["after_step"], zero[False]["after_step"])
    on = one[True]["after_step"] - zero[True]["after_step"]
    off = one[False]["after_step"] - zero[False]["after_step"]
    torch.testing.assert_close(off[1:], 0.9 * off[:-1] + on[1:], rtol=0, atol=1e-5)
    assert zero[True]["before_forward"].shape == (STEPS, 64)


def test_count_collectives_restores_torch_functions():
    originals = dist.all_gather, dist.all_reduce
    with count_collectives() as records:
        assert dist.all_gather is not originals[0] and records == []
    assert (dist.all_gather, dist.all_reduce) == originals


def test_bad_arguments_are_refused_before_any_communication():
    with pytest.raises(ValueError, match="4 processes"):
        practice_demos(0, 2, TRAIN, INPUTS, IMAGES, STEPS, BATCH, 0, TIMEOUT_S)
    with pytest.raises(ValueError, match="need 800 examples"):
        buffer_broadcast(0, None, TRAIN, 100, 8, 0)
