"""Tests for the animations: their frames, their HTML player, its size limit, no global state."""

from __future__ import annotations

import base64
import re

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from bnlib.plotting.animation import (
    animate_percentiles,
    animate_point_clouds,
    animate_running_statistics,
    animation_html,
    bn_transform_frames,
    exponential_average,
)

FRAME = re.compile(r'frames\[(\d+)\] = "data:image/png;base64,([^"]+)"')


def frames_of(html: str) -> list[bytes]:
    """The PNG frames embedded in a player, in order."""
    found = FRAME.findall(html)
    assert [int(index) for index, _ in found] == list(range(len(found)))
    return [base64.b64decode(data) for _, data in found]


@pytest.fixture(autouse=True)
def no_global_state():
    rc_before, figures_before = dict(matplotlib.rcParams), plt.get_fignums()
    yield
    assert plt.get_fignums() == figures_before
    assert dict(matplotlib.rcParams) == rc_before


def cloud(m: int = 64, seed: int = 0) -> np.ndarray:
    generator = np.random.default_rng(seed)
    x = generator.normal(size=(m, 2))
    return np.column_stack([3 + 2 * x[:, 0], -1 + 0.5 * (x[:, 0] + x[:, 1])])


def test_bn_transform_frames_end_at_batch_norm():
    x, gamma, beta = cloud(), [1.5, 0.5], [1.0, -1.0]
    frames, names = bn_transform_frames(x, gamma, beta, eps=1e-5, frames_per_stage=4)
    assert frames.shape == (1 + 3 * 4, len(x), 2) and len(names) == len(frames)
    np.testing.assert_array_equal(frames[0], x)
    normalised = frames[2 * 4]
    np.testing.assert_allclose(normalised.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(normalised.var(axis=0), x.var(axis=0) / (x.var(axis=0) + 1e-5))
    expected = torch.nn.functional.batch_norm(
        torch.from_numpy(x), None, None, torch.tensor(gamma, dtype=torch.float64),
        torch.tensor(beta, dtype=torch.float64), training=True, eps=1e-5)
    np.testing.assert_allclose(frames[-1], expected.numpy(), atol=1e-12)
    assert names[0] == "the batch" and names[-1].startswith("scaled")


def test_bn_transform_frames_refuse_bad_input():
    with pytest.raises(ValueError, match=r"shape \(m >= 2, features\)"):
        bn_transform_frames(np.ones(5), [1.0], [0.0])
    with pytest.raises(ValueError, match="frames_per_stage"):
        bn_transform_frames(cloud(), [1, 1], [0, 0], frames_per_stage=0)


def test_point_cloud_player_has_one_distinct_frame_per_frame():
    frames, names = bn_transform_frames(cloud(), [1.5, 0.5], [1.0, -1.0], frames_per_stage=2)
    html = animation_html(animate_point_clouds(frames, names, dpi=30))
    pngs = frames_of(html)
    assert len(pngs) == len(frames) == 7
    assert len(set(pngs)) == len(pngs), "every frame shows something different"
    assert all(png.startswith(b"\x89PNG") for png in pngs)


def test_point_clouds_refuse_mismatched_titles():
    frames, names = bn_transform_frames(cloud(), [1, 1], [0, 0], frames_per_stage=1)
    with pytest.raises(ValueError, match="one title per frame"):
        animate_point_clouds(frames, names[:-1])
    with pytest.raises(ValueError, match=r"\(frames, points, 2\)"):
        animate_point_clouds(frames[..., :1], names)


def percentile_tables(steps: int = 5) -> dict[str, np.ndarray]:
    centre = np.linspace(-2, 2, steps)[:, None]
    return {"without BN": centre + np.array([-0.1, 0.0, 0.1]) * np.arange(1, steps + 1)[:, None],
            "with BN": np.tile([-1.0, 0.0, 1.0], (steps, 1)) + 0.1 * centre}


def test_percentile_player_frames_follow_the_steps():
    steps = [0, 1, 10, 100, 1000]
    animation = animate_percentiles(steps, percentile_tables(), curve=np.tanh, dpi=30)
    pngs = frames_of(animation_html(animation))
    assert len(pngs) == len(steps) and len(set(pngs)) == len(steps)


def test_percentiles_refuse_bad_tables():
    with pytest.raises(ValueError, match="empty"):
        animate_percentiles([0, 1], {})
    with pytest.raises(ValueError, match=r"must have shape \(3, 3\)"):
        animate_percentiles([0, 1, 2], percentile_tables(2))
    with pytest.raises(ValueError, match="one title per step"):
        animate_percentiles([0, 1, 2, 3, 4], percentile_tables(), titles=["a"])


def test_exponential_average_is_torch_running_mean():
    values = np.random.default_rng(1).normal(3.0, 2.0, size=(50, 8))
    layer = torch.nn.BatchNorm1d(1, momentum=0.1).double()
    expected = []
    for batch in values:
        layer(torch.from_numpy(batch).view(-1, 1))
        expected.append(layer.running_mean.item())
    np.testing.assert_allclose(exponential_average(values.mean(axis=1), 0.1, 0.0), expected)
    with pytest.raises(ValueError, match="momentum"):
        exponential_average(values[:, 0], 0.0, 0.0)


def running_data(steps: int = 40):
    batch = np.sin(np.linspace(0, 3, steps)) + 0.1 * np.random.default_rng(2).normal(size=steps)
    running = {f"momentum {rho}": exponential_average(batch, rho, 0.0) for rho in (0.1, 0.01)}
    return {"mean": batch}, {"mean": running}


def test_running_statistics_player_reveals_the_steps_frame_by_frame():
    batch, running = running_data()
    pngs = frames_of(animation_html(animate_running_statistics(batch, running, frames=8, dpi=30)))
    assert len(pngs) == 8 and len(set(pngs)) == 8


def test_running_statistics_refuse_bad_input():
    batch, running = running_data()
    with pytest.raises(ValueError, match="same statistics"):
        animate_running_statistics({"variance": batch["mean"]}, running)
    with pytest.raises(ValueError, match="one value per step"):
        animate_running_statistics(batch, {"mean": {"short": np.zeros(3)}})
    with pytest.raises(ValueError, match="frames must be between"):
        animate_running_statistics(batch, running, frames=41)


def test_player_plays_offline_with_plain_controls():
    batch, running = running_data()
    html = animation_html(animate_running_statistics(batch, running, frames=2, dpi=20))
    assert "https://" not in html and "http://" not in html and "<link" not in html
    assert 'class="fa' not in html
    for control in ("Play", "Pause", "Next frame", "Previous frame"):
        assert f'aria-label="{control}"' in html


def test_size_limit_is_enforced_not_silently_truncated():
    batch, running = running_data()
    animation = animate_running_statistics(batch, running, frames=10, dpi=40)
    html = animation_html(animation)
    size = len(html.encode())
    assert len(frames_of(html)) == 10
    with pytest.raises(ValueError, match="over max_bytes"):
        animation_html(animate_running_statistics(batch, running, frames=10, dpi=40),
                       max_bytes=size - 1)
    with pytest.raises(ValueError, match="positive"):
        animation_html(animation, max_bytes=0)
