"""Tests of the chunked separator machinery."""

import numpy as np
import pytest
import torch

from xumx_slicq.separator import _tensor_reader, chunk_plan, chunked_apply


def local_process(x):
    """A stand-in for a model with finite reach (+-50 samples): (nb_samples, C, n) -> (nb_samples, 2, C, n)."""
    kernel = torch.hann_window(101, dtype=x.dtype)[None, None]
    nb, c, n = x.shape
    smooth = torch.nn.functional.conv1d(x.reshape(nb * c, 1, n), kernel, padding=50).reshape(nb, c, n)
    return torch.stack([smooth, x - smooth], dim=1)


def test_chunk_plan_tiles_and_merges_short_tail():
    assert chunk_plan(10, 4, 2) == [(0, 4), (4, 8), (8, 10)]
    assert chunk_plan(9, 4, 2) == [(0, 4), (4, 9)]  # a 1-sample tail is shorter than the fade: merged
    assert chunk_plan(3, 4, 2) == [(0, 3)]
    assert chunk_plan(0, 4, 2) == []
    with pytest.raises(ValueError):
        chunk_plan(10, 1, 2)


@pytest.mark.parametrize("length", [1, 77, 1000, 1001, 4321])
@pytest.mark.parametrize("segment,context,fade", [(200, 100, 100), (333, 80, 60), (10_000, 100, 100)])
def test_chunked_equals_whole(length, segment, context, fade):
    x = torch.randn(2, 2, length, dtype=torch.float64)
    whole = local_process(x)
    out = torch.full_like(whole, float("nan"))
    covered = []
    for start, stop, piece in chunked_apply(local_process, _tensor_reader(x), length, segment, context, fade):
        assert piece.shape[-1] == stop - start
        out[..., start:stop] = piece
        covered.append((start, stop))
    # pieces tile [0, length) in order
    assert covered[0][0] == 0 and covered[-1][1] == length
    assert all(a[1] == b[0] for a, b in zip(covered, covered[1:]))
    torch.testing.assert_close(out, whole, rtol=0, atol=1e-12)


def test_crossfade_hides_boundary_errors():
    """With too little context the pieces disagree near boundaries, yet the output stays a convex mix."""
    x = torch.ones(1, 1, 3000, dtype=torch.float64)

    def offset_process(seg):  # output depends on where the segment starts: constant per segment
        return (seg * 0 + torch.rand(1, dtype=seg.dtype)).unsqueeze(1)

    pieces = list(chunked_apply(offset_process, _tensor_reader(x), 3000, 1000, 100, 200))
    out = torch.cat([p for _, _, p in pieces], dim=-1)
    assert out.shape[-1] == 3000
    assert torch.all(out >= 0) and torch.all(out <= 1)
    # no jump larger than the per-sample ramp step inside a cross-fade
    assert torch.diff(out[0, 0, 0]).abs().max() < 1.0 / 100


def test_tensor_reader_zero_pads():
    x = torch.arange(1, 6, dtype=torch.float32)[None, None]  # 1..5
    read = _tensor_reader(x)
    assert read(-2, 3).tolist() == [[[0, 0, 1, 2, 3]]]
    assert read(3, 8).tolist() == [[[4, 5, 0, 0, 0]]]
    assert read(-1, 7).shape[-1] == 8
