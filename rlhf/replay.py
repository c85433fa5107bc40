"""Off-policy (PEBBLE-style) helpers around SB3's replay buffers.

* ``relabel``: recompute a ``ReplayBuffer``'s rewards from its stored transitions with the
  current reward model, in large chunks, normalised as the agent sees them
  (``RewardModel.reward``, the function the learned-reward wrapper's ``reward_fn`` is).
* ``save_replay_buffer`` / ``load_replay_buffer``: the buffer's arrays as an uncompressed
  ``.npz`` (a zip of ``.npy`` files, written atomically, never pickle), loaded back in place
  with every name, dtype and shape checked first.

PEBBLE's pre-training reward (k-NN state entropy) is in ``rlhf.entropy``.
"""

from __future__ import annotations

import json
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
from stable_baselines3.common.buffers import ReplayBuffer

from rlhf.clips import flatten_obs
from rlhf.io import atomic_path
from rlhf.reward.model import RewardModel


class ReplayBufferError(RuntimeError):
    """A replay buffer cannot be relabelled, or a saved one cannot be loaded into it."""


# -- relabelling ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Relabelled:
    """What ``relabel`` did: how many transitions (steps x envs) it rewrote, in how long."""

    transitions: int
    seconds: float


def relabel(buffer: ReplayBuffer, model: RewardModel, *, scaled_actions: bool = True,
            chunk: int = 65_536) -> Relabelled:
    """Rewrite ``buffer.rewards`` (buffer_size, n_envs) in place with the agent's reward under
    ``model``'s current weights: ``model.reward`` (ensemble mean, output-normalised, clipped;
    the same function the learned-reward wrapper calls) of each stored (obs, action[, next
    obs]).

    Only the filled part is touched: steps ``[0, pos)``, or all of them once ``full`` (minus
    slot ``pos`` of a full ``optimize_memory_usage`` buffer, whose observation already is the
    newest next observation; SB3 never samples that slot). Transitions go to the model in
    chunks of about ``chunk`` (whole vector steps of n_envs transitions each): one
    ``model.reward`` call, so one transfer to its device and one back, per chunk.

    ``scaled_actions``: for Box action spaces, the buffer holds actions rescaled to [-1, 1]
    (what SB3's off-policy algorithms store); they are mapped back to the env's bounds, the
    actions the wrapper saw. Pass False for a buffer holding the env's own actions.

    Refused (``ReplayBufferError``): a model that reads next observations over an
    ``optimize_memory_usage`` buffer (there next_obs[t] is obs[t + 1], and the next add
    overwrites the true final observation of an episode with the first of the next, so the
    reward of every episode's last step cannot be recomputed), and a buffer whose
    observations or actions do not fit the model.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    spec = model.spec
    if spec.use_next_obs and buffer.optimize_memory_usage:
        raise ReplayBufferError(
            "cannot relabel an optimize_memory_usage replay buffer for a reward model that "
            "reads next observations: the buffer overwrites each episode's final observation "
            "with the next episode's first; build it with optimize_memory_usage=False")
    obs_rows = _obs_rows(buffer, model)
    action_rows = _action_rows(buffer, model, scaled_actions)
    start = time.perf_counter()
    steps_per_chunk = max(1, chunk // buffer.n_envs)
    done = 0
    for first, stop in _filled_steps(buffer):
        for s in range(first, stop, steps_per_chunk):
            e = min(s + steps_per_chunk, stop)
            obs = obs_rows(buffer.observations, s, e)
            nxt = obs_rows(buffer.next_observations, s, e) if spec.use_next_obs else None
            rewards = model.reward(obs, action_rows(s, e), nxt)
            buffer.rewards[s:e] = rewards.reshape(e - s, buffer.n_envs)
            done += (e - s) * buffer.n_envs
    return Relabelled(done, time.perf_counter() - start)


def _filled_steps(buffer: ReplayBuffer) -> list[tuple[int, int]]:
    """The [start, stop) step ranges holding valid transitions."""
    size, pos = buffer.buffer_size, buffer.pos
    if not buffer.full:
        ranges = [(0, pos)]
    elif buffer.optimize_memory_usage:
        ranges = [(0, pos), (pos + 1, size)]
    else:
        ranges = [(0, size)]
    return [(a, b) for a, b in ranges if b > a]


ObsRows = Callable[[np.ndarray | dict[str, np.ndarray], int, int], np.ndarray]


def _obs_rows(buffer: ReplayBuffer, model: RewardModel) -> ObsRows:
    """A function (stored observations, s, e) -> the model's observations of steps [s, e) as
    (rows, *spec.obs_shape), rows = (e - s) * n_envs; checked against the model here."""
    spec, n_envs = model.spec, buffer.n_envs
    space = buffer.observation_space
    if isinstance(space, gym.spaces.Dict):
        width = sum(int(np.prod(shape)) for shape in buffer.obs_shape.values())
        if width != spec.obs_dim:
            raise ReplayBufferError(f"the buffer's Dict observations flatten to {width} "
                                    f"numbers, the reward model reads {spec.obs_dim}")

        def flat(stored: np.ndarray | dict[str, np.ndarray], s: int, e: int) -> np.ndarray:
            assert isinstance(stored, dict)
            rows = (e - s) * n_envs
            # The wrapper's own flattening (key order, float32), so features match.
            return flatten_obs(space, {k: v[s:e].reshape(rows, *v.shape[2:])
                                       for k, v in stored.items()})

        return flat
    shape = tuple(buffer.obs_shape)
    transpose = False
    if spec.obs_is_image and shape != spec.obs_shape:
        h, w, c = spec.obs_shape
        # SB3 wraps an HWC image env in VecTransposeImage: its buffer holds CHW images, the
        # model was built for (and the wrapper fed it) the env's HWC ones.
        transpose = not spec.channels_first and shape == (c, h, w)
        if not transpose:
            raise ReplayBufferError(f"the buffer holds {shape} images, the reward model reads "
                                    f"{spec.obs_shape}")
    elif int(np.prod(shape)) != spec.obs_dim:
        raise ReplayBufferError(f"the buffer holds {shape} observations, the reward model "
                                f"reads {spec.obs_shape}")

    def rows_of(stored: np.ndarray | dict[str, np.ndarray], s: int, e: int) -> np.ndarray:
        assert isinstance(stored, np.ndarray)
        x = stored[s:e].reshape((e - s) * n_envs, *shape)  # a view: steps are contiguous
        if transpose:
            return np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        # e.g. a Discrete observation: SB3 stores (1,), the model's spec has shape ().
        return x.reshape(len(x), *spec.obs_shape)

    return rows_of


def _action_rows(buffer: ReplayBuffer, model: RewardModel,
                 scaled: bool) -> Callable[[int, int], np.ndarray]:
    """A function (s, e) -> the env's actions of steps [s, e), (rows, action_dim)."""
    spec, n_envs = model.spec, buffer.n_envs
    want = spec.action_dim if spec.action_kind == "box" else len(spec.action_nvec)
    if buffer.action_dim != want:
        raise ReplayBufferError(f"the buffer holds {buffer.action_dim} numbers per action, the "
                                f"reward model reads {want}")
    space = buffer.action_space
    unscale = scaled and isinstance(space, gym.spaces.Box)
    if unscale:
        low, high = space.low.reshape(-1), space.high.reshape(-1)
        if not (np.isfinite(low).all() and np.isfinite(high).all()):
            raise ReplayBufferError("scaled_actions needs finite action bounds (SB3 rescales "
                                    "actions to [-1, 1] only for bounded Box spaces)")

    def rows_of(s: int, e: int) -> np.ndarray:
        a = buffer.actions[s:e].reshape((e - s) * n_envs, buffer.action_dim)
        if unscale:
            # SB3's BasePolicy.unscale_action: what OffPolicyAlgorithm sent to the env.
            return low + (0.5 * (a + 1.0) * (high - low))
        return a

    return rows_of


# -- saving and loading --------------------------------------------------------------------

FORMAT = "rlhf.replay_buffer/1"
_META = "meta"
_BLOCK = 16 * 2**20  # bytes per read while loading: bounds the temporary copies


def _fields(buffer: ReplayBuffer) -> dict[str, np.ndarray]:
    """The buffer's arrays by their name in the file, each (buffer_size, n_envs, ...)."""
    out: dict[str, np.ndarray] = {}
    for name in ("observations", "next_observations"):
        if name == "next_observations" and buffer.optimize_memory_usage:
            continue  # not allocated: next_obs[t] is observations[t + 1]
        stored = getattr(buffer, name)
        if isinstance(stored, dict):
            out.update({f"{name}/{k}": v for k, v in stored.items()})
        else:
            out[name] = stored
    out.update(actions=buffer.actions, rewards=buffer.rewards, dones=buffer.dones,
               timeouts=buffer.timeouts)
    return out


def _rows_kept(name: str, pos: int, full: bool, size: int, optimize_memory: bool) -> int:
    """Leading steps of array ``name`` that hold data (the rest is still zeros)."""
    if full:
        return size
    if optimize_memory and name == "observations":
        return min(pos + 1, size)  # slot pos holds the newest transition's next observation
    return pos


def save_replay_buffer(buffer: ReplayBuffer, path: str | Path) -> None:
    """Write ``buffer``'s filled steps (observations, next_observations or, for a Dict
    space, ``observations/<key>`` ..., actions, rewards, dones, timeouts; each
    (filled, n_envs, ...)) and its pos/full as a ``.npz`` file, atomically.

    No pickle anywhere: ``np.load(path, allow_pickle=False)`` reads every entry. Uncompressed
    and streamed from the buffer's own arrays, so no copy of them is made.
    """
    path = Path(path)
    meta = {"format": FORMAT, "buffer_size": int(buffer.buffer_size),
            "n_envs": int(buffer.n_envs), "pos": int(buffer.pos), "full": bool(buffer.full),
            "optimize_memory_usage": bool(buffer.optimize_memory_usage)}
    with atomic_path(path) as tmp, open(tmp, "wb") as f, \
            zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        _write(zf, _META, np.array(json.dumps(meta)))  # a unicode array, not an object
        for name, array in _fields(buffer).items():
            rows = _rows_kept(name, buffer.pos, buffer.full, buffer.buffer_size,
                              buffer.optimize_memory_usage)
            _write(zf, name, array[:rows])


def _write(zf: zipfile.ZipFile, name: str, array: np.ndarray) -> None:
    # force_zip64: a member over 2 GiB (images) must not fail after it is written.
    with zf.open(f"{name}.npy", "w", force_zip64=True) as fid:
        np.lib.format.write_array(fid, array, allow_pickle=False)


def load_replay_buffer(buffer: ReplayBuffer, path: str | Path) -> None:
    """Load a file written by ``save_replay_buffer`` into ``buffer`` (built with the same
    buffer_size, n_envs, spaces and optimize_memory_usage): arrays bitwise as saved, the
    unsaved tail zeroed, pos and full restored.

    Raises ``ReplayBufferError`` (one line naming the file and the problem) when the file is
    missing or damaged, or does not fit ``buffer``: names, dtypes and shapes are all checked
    from the file's headers before anything is written, and then the buffer is untouched. A
    fault found while reading the data (a bad checksum, a cut-off entry, a non-finite float)
    leaves the buffer empty (pos 0, not full), never half-loaded.
    """
    path = Path(path)
    fields = _fields(buffer)
    try:
        zf = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise ReplayBufferError(f"{path}: no replay buffer file here") from None
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise ReplayBufferError(f"{path}: not a replay buffer file, or damaged (truncated?): "
                                f"{_one_line(e)}") from None
    with zf:
        try:
            plan = _check(zf, buffer, fields)
        except _Mismatch as e:
            raise ReplayBufferError(f"{path}: cannot load into this replay buffer: {e}") \
                from None
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError) as e:
            raise ReplayBufferError(f"{path}: damaged replay buffer file: {_one_line(e)}") \
                from None
        pos, full, rows = plan
        try:
            for name, array in fields.items():
                _read_into(zf, name, array, rows[name])
        except (_Mismatch, zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
            _clear(buffer, fields)
            raise ReplayBufferError(f"{path}: damaged replay buffer file ({_one_line(e)}); "
                                    "the buffer was left empty") from None
    buffer.pos, buffer.full = pos, full


class _Mismatch(Exception):
    """The file and the buffer disagree (message: how)."""


def _check(zf: zipfile.ZipFile, buffer: ReplayBuffer,
           fields: dict[str, np.ndarray]) -> tuple[int, bool, dict[str, int]]:
    """Everything about the file that can be checked without reading its data; returns
    (pos, full, rows per array)."""
    names = zf.namelist()
    stray = [n for n in names if not n.endswith(".npy")]
    if stray:
        raise _Mismatch(f"an unexpected entry {stray[0]!r}")
    entries = {n.removesuffix(".npy") for n in names}
    if _META not in entries:
        raise _Mismatch(f"no {_META!r} entry (not written by save_replay_buffer?)")
    with zf.open(f"{_META}.npy") as f:
        raw = np.lib.format.read_array(f, allow_pickle=False)
    if raw.dtype.kind != "U" or raw.shape != ():
        raise _Mismatch(f"{_META!r} is {raw.dtype} {raw.shape}, not a JSON string")
    meta = json.loads(str(raw[()]))
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise _Mismatch(f"format {meta.get('format') if isinstance(meta, dict) else meta!r}, "
                        f"expected {FORMAT!r}")
    size, n_envs = meta.get("buffer_size"), meta.get("n_envs")
    if (size, n_envs) != (buffer.buffer_size, buffer.n_envs):
        raise _Mismatch(f"saved from a buffer of {size} steps x {n_envs} envs, this one has "
                        f"{buffer.buffer_size} x {buffer.n_envs}")
    if meta.get("optimize_memory_usage") is not bool(buffer.optimize_memory_usage):
        raise _Mismatch(f"saved with optimize_memory_usage={meta.get('optimize_memory_usage')}"
                        f", this buffer has {buffer.optimize_memory_usage}")
    pos, full = meta.get("pos"), meta.get("full")
    # type(...) is: JSON true is a bool, and a bool is an int to isinstance.
    if type(pos) is not int or type(full) is not bool or not 0 <= pos < buffer.buffer_size:
        raise _Mismatch(f"pos {pos!r} / full {full!r} are not a position in "
                        f"{buffer.buffer_size} steps")
    entries.discard(_META)
    missing, extra = sorted(set(fields) - entries), sorted(entries - set(fields))
    if missing:
        raise _Mismatch(f"no {missing[0]!r} array" + f" (and {len(missing) - 1} more)"
                        * (len(missing) > 1))
    if extra:
        raise _Mismatch(f"an unexpected array {extra[0]!r} (a different observation space?)")
    rows = {}
    for name, array in fields.items():
        rows[name] = _rows_kept(name, pos, full, buffer.buffer_size,
                                buffer.optimize_memory_usage)
        with zf.open(f"{name}.npy") as f:
            shape, fortran, dtype = _header(f)
        want = (rows[name], *array.shape[1:])
        if dtype != array.dtype or shape != want or fortran:
            raise _Mismatch(f"{name!r} is {dtype} {shape}" + " (Fortran order)" * fortran
                            + f", this buffer holds {array.dtype} {want}")
    return pos, full, rows


def _header(f: zipfile.ZipExtFile) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(f)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(f)
    raise ValueError(f"unsupported .npy version {version}")


def _read_into(zf: zipfile.ZipFile, name: str, array: np.ndarray, rows: int) -> None:
    """Stream entry ``name``'s data straight into ``array[:rows]``; zero the rest."""
    target = array[:rows]  # C-contiguous: a slice of whole leading rows
    view = memoryview(target.reshape(-1).view(np.uint8))
    with zf.open(f"{name}.npy") as f:
        _header(f)
        offset = 0
        while offset < len(view):
            data = f.read(min(_BLOCK, len(view) - offset))
            if not data:
                raise _Mismatch(f"{name!r} ends after {offset} of {len(view)} bytes")
            view[offset:offset + len(data)] = data
            offset += len(data)
        if f.read(1):  # also reaches the end of the entry, where zipfile checks its CRC
            raise _Mismatch(f"{name!r} holds more data than its shape")
    array[rows:] = 0
    if array.dtype.kind == "f":
        step = max(1, _BLOCK // max(1, target[:1].nbytes))
        for s in range(0, rows, step):
            if not np.isfinite(target[s:s + step]).all():
                # A diverged run or a damaged file: either way it would poison the critic.
                raise _Mismatch(f"{name!r} holds NaN or infinite values")


def _clear(buffer: ReplayBuffer, fields: dict[str, np.ndarray]) -> None:
    for array in fields.values():
        array[:] = 0
    buffer.pos, buffer.full = 0, False


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__
