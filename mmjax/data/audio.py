"""Log-mel spectrograms in pure numpy (no TensorFlow, no librosa)."""

import functools

import numpy as np


def to_float(wave: np.ndarray) -> np.ndarray:
  """int16 PCM -> float32 in [-1, 1); float input is taken as already scaled."""
  if np.issubdtype(wave.dtype, np.integer):
    return wave.astype(np.float32) / 32768.0
  return wave.astype(np.float32)


def fit_length(wave: np.ndarray, samples: int) -> np.ndarray:
  """Cuts or zero-pads to `samples` so spectrograms of one batch share a shape."""
  if len(wave) >= samples:
    return wave[:samples]
  return np.pad(wave, (0, samples - len(wave)))


def _hz_to_mel(hz):
  return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)  # HTK formula


def _mel_to_hz(mel):
  return 700.0 * (10.0 ** (np.asarray(mel) / 2595.0) - 1.0)


@functools.lru_cache(maxsize=16)
def mel_filterbank(sample_rate: int, frame: int, num_mels: int) -> np.ndarray:
  """[frame // 2 + 1, num_mels] triangular filters, evenly spaced in mel up to Nyquist."""
  bin_hz = np.linspace(0, sample_rate / 2, frame // 2 + 1)
  edges = _mel_to_hz(np.linspace(0, _hz_to_mel(sample_rate / 2), num_mels + 2))
  lo, mid, hi = edges[:-2], edges[1:-1], edges[2:]
  rising = (bin_hz[:, None] - lo) / (mid - lo)
  falling = (hi - bin_hz[:, None]) / (hi - mid)
  return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


@functools.lru_cache(maxsize=16)
def _window(frame: int) -> np.ndarray:
  return np.hanning(frame).astype(np.float32)


def num_frames(samples: int, frame: int, hop: int) -> int:
  """Frames of `log_mel` over `samples` samples (a clip shorter than a frame is padded)."""
  return 1 + (max(samples, frame) - frame) // hop


def log_mel(wave: np.ndarray, mel_fb: np.ndarray, frame: int, hop: int) -> np.ndarray:
  """float wave [N] -> float32 [T, num_mels], T = 1 + (N - frame) // hop.

  Standardised per example: loudness varies between clips and datasets, and the
  model should see spectral shape, not gain.
  """
  if len(wave) < frame:
    wave = fit_length(wave, frame)
  starts = np.arange(0, len(wave) - frame + 1, hop)
  frames_tf = wave[starts[:, None] + np.arange(frame)] * _window(frame)
  power_tk = np.abs(np.fft.rfft(frames_tf, axis=-1)) ** 2
  mel_tm = np.log(power_tk @ mel_fb + 1e-6)
  return ((mel_tm - mel_tm.mean()) / (mel_tm.std() + 1e-6)).astype(np.float32)


def log_mel_batch(waves_bn: np.ndarray, mel_fb: np.ndarray, frame: int, hop: int) -> np.ndarray:
  """`log_mel` of each row of float32 [B, N], as one batched FFT and one matmul.

  Equal to stacking `log_mel` per row: every step is elementwise, per-row FFTs, or
  reductions over one row laid out the same way as the per-example call's.
  """
  if waves_bn.shape[1] < frame:
    waves_bn = np.pad(waves_bn, ((0, 0), (0, frame - waves_bn.shape[1])))
  b = waves_bn.shape[0]
  starts = np.arange(0, waves_bn.shape[1] - frame + 1, hop)
  frames_btf = waves_bn[:, starts[:, None] + np.arange(frame)] * _window(frame)
  power_btk = np.abs(np.fft.rfft(frames_btf, axis=-1)) ** 2
  # One [T, K] @ [K, M] product per example, as the per-example op makes: small enough
  # that BLAS keeps each on one thread (a single large product spawned threads that
  # ran ~15x slower on a busy 2-core host), and the same products bit for bit.
  mel_btm = np.log(power_btk @ mel_fb + 1e-6).reshape(b, -1)
  mean = mel_btm.mean(axis=1, keepdims=True)
  std = mel_btm.std(axis=1, keepdims=True)
  return ((mel_btm - mean) / (std + 1e-6)).astype(np.float32).reshape(b, len(starts), -1)
