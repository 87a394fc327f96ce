"""The compute ceiling: multiply-accumulates (MACs) of the network, and the machine's practical float32 peak.

Speed reports (``python -m benchmark speed``, ``python -m export --profile``) divide one by the other, so every
network time reads as a fraction of what the CPU can do at all:

* :func:`network_macs`: MACs of the learned layers of :class:`xumx_slicq.model.XUMXSliCQ` for one input of
  ``nb_samples_audio`` samples, counted analytically from the block shapes (:func:`block_macs`); the count equals
  ``torch.utils.flop_counter`` on the model (:func:`counted_macs`, used by the tests to check the analytic one);
* :func:`macs_per_second`: the same per second of audio (a long input, so edge effects vanish);
* :func:`matmul_peak_gmacs`: a large float32 matrix product at a given thread count, best of a few calls: the
  practical peak of this machine (GMAC/s), measured in the same run as the timings it is compared with;
* :func:`stage_report`: a separation's seconds per stage (from :attr:`xumx_slicq.separator.Separator.stats`),
  the chunk context's share, the network's GMAC per audio second for the chunk shapes run, its achieved GMAC/s
  and the fraction of the peak;
* :func:`receptive_field`: how many audio samples on each side of a point can change the network's mask there
  (what the separator's chunk context must cover).

Counting convention: a convolution costs ``output positions x (input channels / groups) x kernel`` MACs per
output channel. By default the count is what the inference path computes: its two main transposed convolutions
run as convolutions on a zero-padded input (:func:`xumx_slicq.model.transposed_conv_as_conv`), whose products
with the padding count too; ``executed=False`` counts transposed convolutions by their input positions (the
training path). Either way it equals the flop counter on the matching path. BatchNorm, ReLU, sigmoid, the input
normalisation and the mask product are elementwise and not counted.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

__all__ = ["block_macs", "network_macs", "macs_per_second", "counted_macs", "matmul_peak_gmacs",
           "receptive_field", "stage_report"]


def block_macs(nb_bins: int, frames: int, nb_targets: int, nb_channels: int, hidden: Sequence[int],
               kernel: Sequence[int], dilation: Sequence[int], executed: bool = True) -> int:
    """MACs of one :class:`~xumx_slicq.model.BlockNet` on an overlap-add view of ``frames`` frames (per sample).

    Args:
        nb_bins: bins of the block; frames: frames of its overlap-add view ``L`` (after the short-input padding).
        nb_targets, nb_channels, hidden: groups, audio channels, the two hidden widths per target.
        kernel, dilation: ``(kf, kt)`` and ``(freq, time)`` of the four main convolutions.
        executed: count what the inference path computes (the two main transposed convolutions as convolutions
            on a zero-padded input, products with the padding included); False: the transposed convolutions by
            their input positions (the training path; fewer MACs).
    """
    h1, h2 = (int(h) for h in hidden)
    kf, kt = (int(k) for k in kernel)
    df, dt = (int(d) for d in dilation)
    g, c, k = nb_targets, nb_channels, kf * kt
    f1, l1 = nb_bins - df * (kf - 1), frames - dt * (kt - 1)  # after the first (valid) convolution
    f2, l2 = f1 - df * (kf - 1), l1 - dt * (kt - 1)  # after the second
    macs = g * h1 * f1 * l1 * c * k  # Conv2d(c -> h1)
    macs += g * h2 * f2 * l2 * h1 * k  # Conv2d(h1 -> h2)
    if executed:  # the transposed convolutions as padded convolutions, by output positions
        macs += g * h1 * f1 * l1 * h2 * k  # ConvTranspose2d(h2 -> h1)
        macs += g * c * nb_bins * frames * h1 * k  # ConvTranspose2d(h1 -> c)
    else:  # by input positions: the products with non-zero inputs
        macs += g * h2 * f2 * l2 * h1 * k  # ConvTranspose2d(h2 -> h1)
        macs += g * h1 * f1 * l1 * c * k  # ConvTranspose2d(h1 -> c)
    macs += g * c * nb_bins * frames * c * 3  # final ConvTranspose2d(c -> c, (1, 3), stride (1, 2))
    return int(macs)


def network_macs(model: nn.Module, nb_samples_audio: int, nb_samples: int = 1, executed: bool = True) -> int:
    """MACs of ``model``'s learned layers for ``nb_samples`` inputs of ``nb_samples_audio`` audio samples each.

    Counted from the block shapes the separator really runs: ``nb_slices`` of the transform for that length, each
    learned block's overlap-add view ``(nb_slices + 1) T_b / 2`` frames (at least the encoder's minimum).
    ``executed``: see :func:`block_macs` (default: what the inference path computes, as the speed reports time).
    Models without sliCQ blocks (the baselines) are counted with :func:`counted_macs` on their input.
    """
    if not hasattr(model, "nets"):
        return counted_macs(model, nb_samples_audio, nb_samples, grad=not executed)
    from .transforms import SliCQT, overlap_add_length

    slices = SliCQT(**model.slicq_config).nb_slices(int(nb_samples_audio))
    total = 0
    nets = iter(model.nets)
    for blk, learned in zip(model.blocks, model.learned):
        if not learned:
            continue
        net = next(nets)
        frames = max(overlap_add_length(slices, blk.T), net.min_frames)
        total += block_macs(blk.nb_bins, frames, net.nb_targets, net.nb_channels,
                            (net.layers[0].out_channels // net.nb_targets, net.layers[3].out_channels // net.nb_targets),
                            net.kernel, net.dilation, executed)
    return int(total) * int(nb_samples)


def macs_per_second(model: nn.Module, seconds: float = 10.0, executed: bool = True) -> float:
    """MACs per second of (stereo) audio: :func:`network_macs` on one input of ``seconds`` of audio, divided by
    ``seconds`` (the slice grid's edges make short inputs a little dearer per second; the speed reports count the
    chunk shapes they really run instead)."""
    rate = int(getattr(model, "slicq_config", {}).get("sample_rate", 44100))
    return network_macs(model, int(seconds * rate), executed=executed) / seconds


def counted_macs(model: nn.Module, nb_samples_audio: int, nb_samples: int = 1, grad: bool = False) -> int:
    """MACs counted by ``torch.utils.flop_counter.FlopCounterMode`` (flops / 2) on one forward pass over random
    audio of ``nb_samples_audio`` samples: its sliCQ magnitudes for xumx-sliCQ, its STFT magnitudes for the
    baselines (UMX, X-UMX; their LSTMs, which the flop counter does not see, are counted by :func:`_lstm_macs`).

    ``grad=False`` runs the inference path (transposed convolutions as padded convolutions: the zeros of the
    padding are counted too); ``grad=True`` the training path (native transposed convolutions, counted by input
    positions, as :func:`network_macs`). The transforms are outside the count.
    """
    from torch.utils.flop_counter import FlopCounterMode

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(nb_samples, int(getattr(model, "nb_channels", 2)), int(nb_samples_audio), generator=gen)
    was_training = model.training
    model.eval()
    try:
        if hasattr(model, "slicq_config"):
            from .transforms import SliCQT

            with torch.no_grad():
                inputs = [b.abs() for b in SliCQT(**model.slicq_config)(x)]
        else:  # the baselines take STFT magnitudes
            with torch.no_grad():
                inputs = model.stft(x).abs()
        counter = FlopCounterMode(display=False)
        lstm_macs: List[int] = []
        hooks = [m.register_forward_hook(lambda mod, args, out: lstm_macs.append(_lstm_macs(mod, args[0])))
                 for m in model.modules() if isinstance(m, nn.LSTM)]
        try:
            with torch.set_grad_enabled(grad), counter:
                model(inputs)
        finally:
            for h in hooks:
                h.remove()
    finally:
        model.train(was_training)
    return int(counter.get_total_flops()) // 2 + sum(lstm_macs)


def _lstm_macs(lstm: nn.LSTM, x: torch.Tensor) -> int:
    """MACs of one ``nn.LSTM`` call on ``x`` ``(nb_frames, nb_samples, input_size)`` (or batch first): per frame,
    layer and direction, four gates of ``hidden x (input + hidden)`` (the flop counter does not see inside the
    fused LSTM kernel)."""
    steps = x.shape[0] * x.shape[1]  # frames x samples, whichever comes first
    dirs = 2 if lstm.bidirectional else 1
    macs = 0
    for layer in range(lstm.num_layers):
        width = lstm.input_size if layer == 0 else lstm.hidden_size * dirs
        macs += dirs * 4 * lstm.hidden_size * (width + lstm.hidden_size)
    return int(macs * steps)


def matmul_peak_gmacs(threads: Optional[int] = None, size: int = 2048, repeats: int = 5) -> Dict[str, float]:
    """The machine's practical float32 peak: best of ``repeats`` ``size x size`` matrix products at ``threads``
    torch threads (default: torch's current count; restored afterwards).

    Returns ``{"gmacs": best GMAC/s, "median_gmacs": ..., "threads": ..., "size": ..., "repeats": ...}``
    (``size**3`` MACs per product).
    """
    from .timing import time_calls

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        gen = torch.Generator().manual_seed(0)
        a = torch.randn(size, size, generator=gen)
        b = torch.randn(size, size, generator=gen)
        out = torch.empty(size, size)
        timing = time_calls(lambda: torch.mm(a, b, out=out), repeats=repeats)
        used = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    macs = float(size) ** 3
    walls = sorted(timing.wall_s)
    return {"gmacs": macs / timing.best_s / 1e9, "median_gmacs": macs / walls[len(walls) // 2] / 1e9,
            "threads": used, "size": size, "repeats": repeats}


def receptive_field(model: nn.Module) -> Dict[str, object]:
    """Audio samples on each side of a point that can change the network's mask there, per learned block, and
    the reach of the whole path (forward sliCQ -> network -> inverse sliCQ) without Wiener-EM.

    Per block: the overlap-add view has a frame hop of ``sllen / T_b`` samples (``T_b / 2`` frames per slice hop of
    ``sllen / 2``); the four main layers (two valid convolutions, two full transposed ones, kernel ``kt``, time
    dilation ``d``) reach ``2 d (kt - 1)`` frames to each side (output frame ``j`` sees input frames
    ``j - 2 d (kt - 1) .. j + 2 d (kt - 1)``), the final stride-2 transposed convolution one more frame. A coefficient of a slice depends on that slice's ``sllen`` samples, and the inverse spreads it over
    ``sllen`` samples again, so the path's reach is ``max_b(network reach) + sllen`` samples (half a slice before
    the network, half after, on each side). Wiener-EM is not included: its spatial covariances are sums over all
    frames of a chunk, so it is not local at all (docs/wiener.md, "Chunks").

    Returns ``{"blocks": [{"first_bin", "T", "kernel", "frames", "samples"}, ...], "network_samples": max over
    blocks, "slice_samples": sllen, "path_samples": network + sllen}``, all reaches to one side.
    """
    from .transforms import SliCQT

    sllen = SliCQT(**model.slicq_config).sllen
    rows: List[Dict[str, object]] = []
    nets = iter(model.nets)
    for blk, learned in zip(model.blocks, model.learned):
        if not learned:
            continue
        net = next(nets)
        kt, dt = net.kernel[1], net.dilation[1]
        frames = 2 * dt * (kt - 1) + 1  # to each side
        rows.append({"first_bin": blk.first_bin, "T": blk.T, "kernel": list(net.kernel), "frames": frames,
                     "samples": int(math.ceil(frames * sllen / blk.T))})
    reach = max(int(r["samples"]) for r in rows) if rows else 0
    return {"blocks": rows, "network_samples": reach, "slice_samples": int(sllen), "path_samples": reach + int(sllen)}


def stage_report(model: nn.Module, stats: Dict[str, object], audio_samples: int, total_s: Optional[float] = None,
                 peak_gmacs: Optional[float] = None, sample_rate: int = 44100) -> Dict[str, object]:
    """Where a separation's time went, and how close its network came to the machine's peak.

    Args:
        model: the separated-with model (for the MAC count of the chunk shapes run).
        stats: :attr:`xumx_slicq.separator.Separator.stats` after the separation (stage seconds, ``segment_samples``:
            the input length of every chunk, context included).
        audio_samples: samples of the song (per channel).
        total_s: wall seconds of the whole separation (file to file): what the stages leave is file I/O and
            chunking (reading, cross-fades, writing).
        peak_gmacs: :func:`matmul_peak_gmacs` of the same run, for ``fraction_of_peak``.
    Returns:
        ``{"audio_seconds", "processed_seconds", "processed_ratio" (processed / real audio), "stages": {name:
        seconds}, "context_s" (the stages' seconds spent on context samples, assuming cost proportional to
        length), "io_and_other_s", "network_gmac", "gmac_per_audio_s", "achieved_gmacs", "peak_gmacs",
        "fraction_of_peak"}`` (None where the input does not allow it).
    """
    segments = [int(n) for n in stats.get("segment_samples", [])]  # type: ignore[union-attr]
    processed = sum(segments)
    audio_s = audio_samples / sample_rate
    stages = {k: float(stats[k]) for k in ("forward_slicq_s", "network_s", "wiener_s", "inverse_slicq_s")
              if k in stats}
    staged = sum(stages.values())
    ratio = processed / audio_samples if audio_samples else None
    per_length = {n: network_macs(model, n) for n in set(segments)}  # the chunk shapes run, context included
    macs = sum(per_length[n] for n in segments)
    net_s = stages.get("network_s") or None
    achieved = macs / net_s / 1e9 if net_s and hasattr(model, "nets") else None
    return {"audio_seconds": audio_s, "processed_seconds": processed / sample_rate, "processed_ratio": ratio,
            "segments": len(segments), "stages": stages,
            "context_s": staged * (1 - 1 / ratio) if ratio and staged else None,
            "io_and_other_s": (total_s - staged) if total_s is not None and staged else None,
            "network_gmac": macs / 1e9, "gmac_per_audio_s": macs / 1e9 / audio_s if audio_s else None,
            "achieved_gmacs": achieved, "peak_gmacs": peak_gmacs,
            "fraction_of_peak": achieved / peak_gmacs if achieved and peak_gmacs else None}
