"""torch.distributed for r1kit: ranks from torchrun, FSDP2 sharding, collectives, DCP checkpoints.

One process (no torchrun, or torchrun with a single process) never touches torch.distributed:
every helper here then answers as rank 0 of 1 and does nothing, so single-process code stays as
it is. Under `torchrun --nproc-per-node N [--nnodes M --rdzv-endpoint HOST:PORT ...]`:

- `init(device)` joins the job: NCCL for CUDA tensors (rank on cuda:LOCAL_RANK) with gloo beside
  it for CPU tensors and Python objects; gloo alone on CPU. With R1KIT_SHARE_GPUS=1 a node may
  run more ranks than it has GPUs (rank on cuda:LOCAL_RANK % GPUs, every collective through
  gloo, since NCCL refuses two ranks on one GPU): slow collectives, for trying a multi-rank
  layout such as async GRPO's generator + trainer on a one-GPU machine.
- `shard(model)` wraps a transformers causal LM with FSDP2 `fully_shard`: each decoder layer,
  then the root (embeddings, final norm, LM head, so tied weights stay in one group). On CUDA
  parameters are gathered in bf16 and gradients reduced in fp32 (MixedPrecisionPolicy).
- `gather_weights(sharded, full)` fills an unsharded copy (a rank's engine) from the shards one
  parameter at a time (DTensor.full_tensor(): one all-gather per tensor), so no rank ever
  materialises a second full model to do it.
- `save_sharded` / `load_sharded`: torch.distributed.checkpoint of model + optimizer through
  get_state_dict / set_state_dict. DCP reshards on load: a checkpoint written by N ranks loads on
  M ranks, or in one plain process (no process group), and `export_hf` turns it into a plain
  Hugging Face directory.
- `scope(group)`: inside it world(), rank(), is_main(), share(), barrier(), all_reduce(),
  all_gather_objects(), shard() and the sharded checkpoints see only that sub-group's ranks, so
  the code above runs unchanged on a part of the job (async GRPO's trainer ranks or generator
  ranks, rl/async_loop.py). `broadcast_tensors` sends one rank's tensors to a group in buckets.
"""

from __future__ import annotations

import hashlib
import math
import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import timedelta
from pathlib import Path
from types import MethodType
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from r1kit.errors import R1kitError, disk_error
from r1kit.modeling import load_model, load_tokenizer, save_model

T = TypeVar("T")
_LONG: Any = None  # a gloo group with a long timeout, for waiting on rank 0 (on_main)
_SCOPE: Any = None  # the group world(), rank() and the collectives below use (None: all ranks)
BUCKET_BYTES = 256 * 2**20  # broadcast_tensors: tensors flattened into buffers of this size


def launched() -> bool:
    """True in a torchrun job of more than one process (WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def world() -> int:
    return dist.get_world_size(_SCOPE) if active() else 1


def rank() -> int:
    return dist.get_rank(_SCOPE) if active() else 0


def global_rank() -> int:
    """This process's rank in the whole job, whatever the scope."""
    return dist.get_rank() if active() else 0


@contextmanager
def scope(group: Any) -> Iterator[None]:
    """Inside: world(), rank(), is_main(), share(), barrier(), all_reduce(),
    all_gather_objects(), shard() and save/load_sharded act on `group` (a sub-group from
    new_group that this rank belongs to) instead of every rank. None: no change."""
    global _SCOPE
    before = _SCOPE
    _SCOPE = group if group is not None else before
    try:
        yield
    finally:
        _SCOPE = before


def new_group(ranks: Sequence[int], backend: str | None = None) -> Any:
    """A process group of `ranks` (global ranks). Every rank of the job must call this, in the
    same order, members or not. backend None: the job's own (gloo for CPU tensors and objects,
    NCCL for CUDA tensors on GPU)."""
    return dist.new_group(list(ranks), backend=backend)


def is_main() -> bool:
    return rank() == 0


def init(device: str = "auto") -> str:
    """Join the torchrun job (once) and return this rank's device; without torchrun (or with
    one process) return `device` unchanged. `device` "cpu" runs the job on CPUs with gloo."""
    if not launched():
        return device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device != "cpu" and torch.cuda.is_available()
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise R1kitError(f"--device {device}: no CUDA device on this node")
    shared = sharing_gpus()
    if cuda:
        gpus = torch.cuda.device_count()
        if local >= gpus and not shared:
            raise R1kitError(
                f"local rank {local} but {gpus} GPUs on this node; --nproc-per-node must not "
                "exceed the GPUs per node (or set R1KIT_SHARE_GPUS=1 to share them)"
            )
        local %= gpus
        torch.cuda.set_device(local)
    if not active():
        nccl = cuda and not shared
        dist.init_process_group("cpu:gloo,cuda:nccl" if nccl else "gloo")
    return f"cuda:{local}" if cuda else "cpu"


def sharing_gpus() -> bool:
    """R1KIT_SHARE_GPUS=1: ranks may share a GPU, and CUDA tensors' collectives go through gloo
    (host copies) instead of NCCL."""
    v = os.environ.get("R1KIT_SHARE_GPUS", "").strip().lower()
    if v in ("", "0", "false", "no", "off"):
        return False
    if v in ("1", "true", "yes", "on"):
        return True
    raise R1kitError(f"R1KIT_SHARE_GPUS={v!r}: expected 1 or 0")


def report_once(line: str, say: Callable[[str], None], wait_s: float = 5.0) -> None:
    """say(line) on the first rank of the job to report this exact line, on no other: an error
    every rank hits (a bad flag, a missing dataset) is shown once, while one that a single rank
    hits (its own node's disk or environment) is still shown, by that rank. Then wait up to
    `wait_s` for every rank to report the line, so that ranks failing together also exit
    together (with the same code) before torchrun tears the slower ones down.

    The line is counted in torchrun's agent store (TORCHELASTIC_USE_AGENT_STORE: hosted by the
    torchrun process, so it outlives a rank that has already exited), reached as the process
    group reaches it (MASTER_ADDR:MASTER_PORT), whether or not the group was formed. Without
    that store (another launcher, or the store gone): say(line) on every rank, as one process
    does; a duplicate line is better than a lost one."""
    store = None
    if launched() and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        try:
            store = dist.TCPStore(
                os.environ["MASTER_ADDR"],
                int(os.environ["MASTER_PORT"]),
                is_master=False,
                timeout=timedelta(seconds=wait_s),
            )
        except (KeyError, ValueError, RuntimeError, OSError):  # no store: say it here
            store = None
    if store is None:
        say(line)
        return
    # a restart of the job (torchrun --max-restarts) counts afresh
    attempt = (
        os.environ.get("TORCHELASTIC_RUN_ID", ""),
        os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"),
    )
    key = "r1kit/report/" + hashlib.sha256("\0".join((*attempt, line)).encode()).hexdigest()
    try:
        first = store.add(key, 1) == 1
    except (RuntimeError, OSError):
        first = True
    if first:
        say(line)
    world_size = int(os.environ["WORLD_SIZE"])
    deadline = time.monotonic() + wait_s
    try:
        while store.add(key, 0) < world_size and time.monotonic() < deadline:
            time.sleep(0.05)
    except (RuntimeError, OSError):  # the store went away (torchrun is ending the job)
        pass
    # torchrun sends SIGTERM to the ranks still running as soon as one exits: this rank is only
    # exiting now, so keep its own exit code rather than dying of the signal (-15) on the way
    with suppress(ValueError):  # not the main thread: signals stay as they are
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def shutdown() -> None:
    if active():
        dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if active():
        dist.barrier(group=_SCOPE)


def world_barrier() -> None:
    """A barrier over every rank of the job, whatever the scope."""
    if active():
        dist.barrier()


def share(n: int, r: int | None = None, w: int | None = None) -> range:
    """Rank r's contiguous share of n items; sizes differ by at most one (some may be empty)."""
    r, w = rank() if r is None else r, world() if w is None else w
    return range(r * n // w, (r + 1) * n // w)


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order (picklable Python objects; through gloo)."""
    if not active():
        return [obj]
    out: list[Any] = [None] * world()
    dist.all_gather_object(out, obj, group=_SCOPE)
    return out


def broadcast_object(obj: Any, src: int, group: Any) -> Any:
    """Global rank `src`'s picklable `obj` on every rank of `group` (members only call this;
    a gloo group: the object is pickled into a CPU tensor)."""
    box = [obj]
    dist.broadcast_object_list(box, src=src, group=group)
    return box[0]


def map_shares(n: int, fn: Callable[[range], list[T]]) -> list[T]:
    """fn(indices) on this rank's contiguous share of n items (not called for an empty share),
    every rank's results concatenated in rank order, so in item order; in one process, fn on
    all n items."""
    mine = share(n)
    failure = None
    try:
        local = fn(mine) if len(mine) else []
    except R1kitError as err:  # a one-line failure on this rank's share: every rank raises it
        failure, local = err, None
    parts = all_gather_objects(local if failure is None else str(failure))
    raise_first([p if isinstance(p, str) else None for p in parts], failure)
    return [x for part in parts for x in part]


def first_failure(
    lines: Sequence[str | None], failure: R1kitError | None = None
) -> R1kitError | None:
    """After every rank's one-line failure (None: none) was gathered: the first in rank order
    (this rank's own `failure` when it is that line, else an R1kitError with it), the same line
    on every rank; None when no rank failed."""
    first = next((line for line in lines if line is not None), None)
    if first is None:
        return None
    if failure is not None and str(failure) == first:
        return failure
    return R1kitError(first)


def raise_first(lines: Sequence[str | None], failure: R1kitError | None = None) -> None:
    """Raise first_failure(lines, failure) on every rank; return when no rank failed."""
    err = first_failure(lines, failure)
    if err is not None:
        raise err


def main_part(fn: Callable[[], None], where: str | Path | None = None) -> None:
    """fn() on rank 0 alone, then a barrier of every rank that carries its failure, so that no
    rank waits on a barrier rank 0 never reaches: rank 0 raises its own error, every other rank
    an R1kitError with its line (an R1kitError's, a full disk's as errors.disk_error words it,
    `where` being the directory written, else `rank 0: TypeError: ...`). In one process: fn()."""
    if not active():
        fn()
        return
    failure: Exception | None = None
    line = None
    if is_main():
        try:
            fn()
        except Exception as err:
            failure = err
            line = str(err) if isinstance(err, R1kitError) else disk_error(err, where)
            line = line or f"rank 0: {type(err).__name__}: {err}"
    first = all_gather_objects(line)[0]
    if failure is not None:
        raise failure
    if first is not None:
        raise R1kitError(first)


def all_reduce(x: float, op: str = "sum") -> float:
    """A Python number summed (or maxed: op="max") over ranks, in float64."""
    if not active():
        return x
    t = torch.tensor([float(x)], dtype=torch.float64)  # CPU: goes through gloo
    dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX, group=_SCOPE)
    return float(t.item())


def to_float(t: Any) -> float:
    """float() of a tensor that may be a DTensor (e.g. clip_grad_norm_ of sharded gradients)."""
    return float(t.full_tensor() if hasattr(t, "full_tensor") else t)


def _blocks(model) -> Sequence[torch.nn.Module]:
    base = model.get_decoder() if hasattr(model, "get_decoder") else model
    for name in ("layers", "h", "blocks"):
        blocks = getattr(base, name, None)
        if isinstance(blocks, torch.nn.ModuleList) and len(blocks):
            return blocks
    raise R1kitError(f"cannot find the decoder layers of {type(model).__name__} to shard")


def shard(model, methods: dict[str, Callable] | None = None):
    """FSDP2 over the ranks, in place: each decoder layer a unit, the root last. `methods`
    {name: fn(model, ...)} become methods of the model that run under the root's FSDP hooks
    (register_fsdp_forward_method), for computations that call the decoder and the LM head
    directly instead of model.forward (the root's parameters are gathered for them). Returns
    the model; a no-op in one process."""
    if not active():
        return model
    from torch.distributed.fsdp import (
        MixedPrecisionPolicy,
        fully_shard,
        register_fsdp_forward_method,
    )

    kw: dict[str, Any] = {}
    cuda = next(model.parameters()).is_cuda
    if cuda:  # compute in bf16, reduce gradients in fp32
        kw["mp_policy"] = MixedPrecisionPolicy(
            param_dtype=torch.bfloat16, reduce_dtype=torch.float32
        )
    if _SCOPE is not None:  # shards over the scope's ranks only (async GRPO's trainers)
        from torch.distributed.device_mesh import DeviceMesh

        kw["mesh"] = DeviceMesh.from_group(_SCOPE, "cuda" if cuda else "cpu")
    for block in _blocks(model):
        fully_shard(block, **kw)
    fully_shard(model, **kw)
    for name, fn in (methods or {}).items():
        setattr(model, name, MethodType(fn, model))
        register_fsdp_forward_method(model, name)
    return model


def is_sharded(model) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


@torch.no_grad()
def gather_weights(sharded, full) -> int:
    """Copy the sharded model's parameters into the same-named ones of an unsharded copy, one
    all-gather per parameter (every rank must call this). Returns the tensors copied."""
    dst = dict(full.named_parameters())
    n = 0
    for name, p in sharded.named_parameters():
        t = p.full_tensor() if hasattr(p, "full_tensor") else p  # [full shape], transient
        dst[name].copy_(t)
        n += 1
    return n


@torch.no_grad()
def shard_optimizer_state(optimizer) -> int:
    """After optimizer.load_state_dict of a one-process checkpoint (full tensors) into the
    optimizer of a sharded model: each full state tensor shaped as its parameter (Adam's
    moments) becomes this rank's shard of it, laid out as the parameter's own DTensor. Every
    rank read the same full tensors from the file, so each keeps its chunk without any
    communication (src_data_rank None). Scalars (Adam's step) stay as they are. Returns the
    tensors resharded."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    n = 0
    for p, state in optimizer.state.items():
        if not isinstance(p, DTensor):
            continue
        for key, v in state.items():
            if isinstance(v, DTensor) or not torch.is_tensor(v) or v.shape != p.shape:
                continue
            v = v.to(device=p.device, dtype=p.dtype)  # [full shape]
            state[key] = distribute_tensor(v, p.device_mesh, p.placements, src_data_rank=None)
            n += 1
    return n


def save_sharded(path: str | Path, model, optimizer=None) -> None:
    """Each rank writes its shards of model (+ optimizer) to the directory `path` (DCP format;
    with several nodes `path` must be on storage every node sees)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_state_dict

    if optimizer is None:
        state = {"model": get_model_state_dict(model)}
    else:
        msd, osd = get_state_dict(model, optimizer)
        state = {"model": msd, "optim": osd}
    try:
        dcp.save(state, checkpoint_id=str(path), process_group=_SCOPE)
    except dcp.api.CheckpointException as err:  # the same on every rank; a BaseException
        # one rank's own error raised on every rank, as an ordinary write's would be: the
        # lowest rank's OSError (a full disk, ...) when there is one, else the lowest rank's
        errors = [err.failures[r][0] for r in sorted(err.failures)]
        raise next((e for e in errors if isinstance(e, OSError)), errors[0]) from err


def load_sharded(path: str | Path, model, optimizer=None) -> None:
    """Load a DCP checkpoint into model (+ optimizer) in place, whatever the number of ranks it
    was written with and this job's (one plain process included)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_state_dict,
        set_model_state_dict,
        set_state_dict,
    )

    if not (Path(path) / ".metadata").exists():
        raise R1kitError(f"{path} is not a sharded checkpoint (no .metadata)")
    if optimizer is None:
        state = {"model": get_model_state_dict(model)}
        dcp.load(state, checkpoint_id=str(path), process_group=_SCOPE)
        set_model_state_dict(model, state["model"])
        return
    msd, osd = get_state_dict(model, optimizer)  # initialises the optimizer state to fill
    state = {"model": msd, "optim": osd}
    dcp.load(state, checkpoint_id=str(path), process_group=_SCOPE)
    set_state_dict(
        model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"]
    )


def export_hf(path: str | Path, model_spec: str | None, out: str | Path, tokenizer=None) -> Path:
    """A plain Hugging Face directory from a DCP checkpoint: the architecture (and tokenizer,
    unless given) from `model_spec` (the run's base model), the weights from `path`. One
    process, no process group; loads the full model on the CPU."""
    model = load_model(model_spec, device="cpu", dtype=torch.float32)
    load_sharded(path, model)
    save_model(model, tokenizer or load_tokenizer(model_spec), out)
    return Path(out)


def _buckets(tensors: Sequence[torch.Tensor], limit: int) -> Iterator[list[torch.Tensor]]:
    """Consecutive runs of `tensors` of one dtype and device, each at most `limit` bytes (a
    larger tensor alone)."""
    bucket: list[torch.Tensor] = []
    size = 0
    for t in tensors:
        nbytes = t.numel() * t.element_size()
        same = not bucket or (t.dtype, t.device) == (bucket[0].dtype, bucket[0].device)
        if bucket and (not same or size + nbytes > limit):
            yield bucket
            bucket, size = [], 0
        bucket.append(t)
        size += nbytes
    if bucket:
        yield bucket


@torch.no_grad()
def broadcast_tensors(
    tensors: Sequence[torch.Tensor], src: int, group: Any, bucket_bytes: int = BUCKET_BYTES
) -> int:
    """Global rank `src`'s values of `tensors` into the same-shaped tensors of every rank of
    `group`, in place: consecutive tensors flattened into buckets of at most `bucket_bytes`
    (one broadcast each: few large messages instead of one per tensor), unflattened on the
    receivers. NCCL for CUDA tensors, gloo for CPU ones. Returns the bytes broadcast."""
    sent = 0
    sending = dist.get_rank() == src
    for bucket in _buckets(tensors, bucket_bytes):
        if len(bucket) == 1 and bucket[0].is_contiguous():  # no copy needed
            dist.broadcast(bucket[0], src=src, group=group)
            sent += bucket[0].numel() * bucket[0].element_size()
            continue
        if sending:
            flat = torch.cat([t.reshape(-1) for t in bucket])  # [sum of numels]
        else:
            n = sum(t.numel() for t in bucket)
            flat = torch.empty(n, dtype=bucket[0].dtype, device=bucket[0].device)
        dist.broadcast(flat, src=src, group=group)
        if not sending:
            at = 0
            for t in bucket:
                t.copy_(flat[at : at + t.numel()].view_as(t))
                at += t.numel()
        sent += flat.numel() * flat.element_size()
    return sent


def passes(n_global: int, micro_batch: int) -> int:
    """Forward/backward passes every rank runs for an optimizer batch of n_global rows split
    over the ranks: ceil(largest share / micro_batch). A rank with fewer rows pads to this count
    with zero-weight passes (FSDP's collectives must line up)."""
    return max(1, math.ceil(math.ceil(n_global / world()) / micro_batch))


def on_main(fn: Callable[[], T]) -> T:
    """fn() on rank 0 alone, then its result on every rank (picklable). The other ranks wait on
    a gloo group with a 24 h timeout (fn may be hours of teacher requests); an error on rank 0
    is raised on every rank. In one process: fn()."""
    global _LONG
    if not active():
        return fn()
    if _LONG is None:  # every rank reaches this first call together
        _LONG = dist.new_group(backend="gloo", timeout=timedelta(hours=24))
    box: list[Any] = [None]
    if is_main():
        try:
            box[0] = ("ok", fn(), False)
        except BaseException as err:  # tell the others, then fail here as well
            user = isinstance(err, R1kitError)
            box[0] = ("error", str(err) if user else f"{type(err).__name__}: {err}", user)
            dist.broadcast_object_list(box, src=0, group=_LONG)
            raise
    dist.broadcast_object_list(box, src=0, group=_LONG)
    kind, value, user = box[0]
    if kind == "error":  # an R1kitError word for word, so that the CLI shows it once
        raise R1kitError(value if user else f"rank 0: {value}")
    return value
