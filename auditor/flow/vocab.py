"""Library semantics declared as data: the one vocabulary every flow analysis and rule reads.

Semgrep-style: *sources* (strings naming validation/training shards, readers that turn a name into content),
*sinks* (network calls, serializers, updates), *sanitizers* (metadata that describes a tensor without carrying its
content), and the *mutators* through which a value flows into a container or tensor in place. Nothing here is code
that decides a verdict; analyses import these sets instead of keeping private copies, so a library call learnt once
is learnt everywhere (taint, order, targets, phases, the I/O rules).

Names are matched as the analyses see them: `*_CALLS` of dotted external names hold the import-resolved name
(`numpy.fromfile`, not `np.fromfile`); `*_ATTRS` / method sets hold the bare attribute of `x.m(...)` / `x.a`.
"""

from __future__ import annotations

import re

# ------------------------------------------------------------------------------------------------------ sources
# Shard and split names as the challenge's data pipeline writes them (rules.md section C): `fineweb_val_*.bin`,
# `fineweb_val_000001.bin`, `fineweb_val_bytes_*.bin`, `val_000.bin`, `validation_*.npy`, `val.bin`, glob classes
# `val_[0-9]*`. Log formats (`val_loss:{x:.4f}`, `val_bpb`) are not shard names: the digit/`[` endings are only
# accepted when no `:`/`{`/`}` sits between `val_` and them.
_SEP = r"(?:^|[/_\-.*])"
VAL_SHARD: re.Pattern[str] = re.compile(
    r"fineweb_val"
    + rf"|{_SEP}val(?:idation)?_[^/\s]*(?:\*|\.bin|\.npy)"
    + rf"|{_SEP}val(?:idation)?_[^\s{{}}:]*(?:\*|\[|\d{{3,}}|\.bin|\.npy)"
    + rf"|{_SEP}val(?:idation)?\.(?:bin|npy)",
    re.IGNORECASE,
)
TRAIN_SHARD: re.Pattern[str] = re.compile(
    r"fineweb_train" + rf"|{_SEP}train_[^/\s]*(?:\*|\.bin)" + rf"|{_SEP}train\.bin",
    re.IGNORECASE,
)

# Calls that turn a shard name into shard content (import-resolved dotted names).
READER_CALLS: frozenset[str] = frozenset(
    {
        "open",
        "io.open",
        "builtins.open",
        "numpy.fromfile",
        "numpy.memmap",
        "numpy.load",
        "numpy.loadtxt",
        "torch.load",
        "torch.from_file",
        "mmap.mmap",
        "datasets.load_dataset",
        "datasets.load_from_disk",
        "pandas.read_parquet",
        "pandas.read_csv",
        "pyarrow.parquet.read_table",
        "safetensors.torch.load_file",
    }
)
# Methods that read content from a path/file object (`Path.read_bytes()`, `f.read()`); receivers from os/re/json
# modules are excluded by the users (`re.read` does not exist, `json.load` of a config is not a shard read).
READER_ATTRS: frozenset[str] = frozenset(
    {"read_bytes", "read_text", "fromfile", "memmap", "read", "readlines", "read_parquet"}
)

# --------------------------------------------------------------------------------------------------- sanitizers
# Attributes that describe a tensor without carrying its content.
METADATA_ATTRS: frozenset[str] = frozenset(
    {"shape", "dtype", "device", "ndim", "is_cuda", "requires_grad", "__class__", "__name__"}
)
# Calls / methods whose result is a size, a type or a flag of their argument, never its values.
METADATA_CALLS: frozenset[str] = frozenset(
    {
        "len",
        "__len__",
        "numel",
        "size",
        "dim",
        "ndimension",
        "nelement",
        "element_size",
        "stride",
        "isinstance",
        "type",
        "id",
        "hasattr",
        "callable",
        "is_floating_point",
        "is_contiguous",
        "get_device",
    }
)
# Constructors whose result is built from a shape alone (`torch.zeros(n)`, `range(len(x))`): no value of the
# argument reaches the result. Slicing analyses (which token is the target) stop at them.
SHAPE_BUILDERS: frozenset[str] = frozenset(
    {"range", "arange", "zeros", "ones", "empty", "zeros_like", "ones_like", "empty_like", "full"}
)

# ---------------------------------------------------------------------------------------------------- mutators
# In-place writes into a container: `c.append(v)` makes c carry v.
CONTAINER_MUTATORS: frozenset[str] = frozenset(
    {"append", "extend", "insert", "update", "add", "setdefault", "put", "appendleft", "push"}
)
# In-place tensor writes (any `x.op_(...)` with a trailing underscore is one too; these are the common ones).
TENSOR_MUTATORS: frozenset[str] = frozenset(
    {
        "copy_",
        "add_",
        "sub_",
        "mul_",
        "put_",
        "index_add_",
        "index_copy_",
        "scatter_",
        "scatter_add_",
        "addmm_",
        "baddbmm_",
    }
)
# nn.Module methods that store their argument's content in the module.
MODULE_MUTATORS: frozenset[str] = frozenset({"register_buffer", "register_parameter", "load_state_dict"})
MUTATORS: frozenset[str] = CONTAINER_MUTATORS | TENSOR_MUTATORS | MODULE_MUTATORS
# In-place writes keyed by an index (lookup tables, caches) and the position of the index argument:
# `t.index_add_(0, keys, v)`, `t.scatter_add_(0, keys, v)`, `t.index_put_((keys,), v)`, `d.update(...)`.
KEYED_WRITERS: dict[str, int] = {
    "index_add_": 1,
    "scatter_add_": 1,
    "scatter_": 1,
    "scatter_reduce_": 1,
    "index_copy_": 1,
    "index_fill_": 1,
    "index_put_": 0,
    "put_": 0,
    "update": 0,
    "setdefault": 0,
}
# Histograms: `table += np.bincount(keys, minlength=n)` adds one count per key, a keyed write by another route.
HISTOGRAM_CALLS: frozenset[str] = frozenset({"bincount", "histc", "histogram", "histogramdd"})

# ------------------------------------------------------------------------------------------------------ contexts
# `with torch.no_grad():` / `@torch.inference_mode()`; `torch.set_grad_enabled(False)` is the toggle form.
NO_GRAD_CONTEXTS: frozenset[str] = frozenset({"no_grad", "inference_mode"})
GRAD_TOGGLE = "set_grad_enabled"

# ------------------------------------------------------------------------------------------------------- updates
# Gradient computation: `loss.backward()` (attribute) or these import-resolved calls.
BACKWARD_ATTR = "backward"
BACKWARD_CALLS: frozenset[str] = frozenset({"torch.autograd.grad", "torch.autograd.backward"})
# `opt.step()` is a parameter update unless the receiver is a learning-rate scheduler; the receiver's spelling is
# the only hint available when its class is external.
STEP_ATTR = "step"
SCHEDULER_HINTS: tuple[str, ...] = ("sched", "lr_", "warmup", "swa")

# -------------------------------------------------------------------------------------------------- serializers
SERIALIZER_CALLS: frozenset[str] = frozenset(
    {
        "torch.save",
        "pickle.dump",
        "pickle.dumps",
        "numpy.save",
        "numpy.savez",
        "numpy.savez_compressed",
        "safetensors.torch.save_file",
        "save_file",
        "torch.jit.save",
    }
)
COMPRESS_MODULES: tuple[str, ...] = ("zlib", "lzma", "bz2", "brotli", "zstd", "zstandard", "gzip", "lz4")

# ------------------------------------------------------------------------------------------------------ network
# Modules whose every call is a network client call.
NET_MODULES: tuple[str, ...] = (
    "socket",
    "requests",
    "httpx",
    "aiohttp",
    "urllib3",
    "http.client",
    "ftplib",
    "paramiko",
    "boto3",
    "gdown",
    "wget",
    "pycurl",
    "smtplib",
    "websocket",
    "websockets",
    "grpc",
)
# Single calls that open a connection or download.
NET_CALLS: frozenset[str] = frozenset(
    {
        "urllib.request.urlopen",
        "urllib.request.urlretrieve",
        "urllib.request.Request",
        "urllib.request.build_opener",
        "urllib.urlopen",
        "urllib.urlretrieve",
        "urllib2.urlopen",
        "datasets.load_dataset",
        "torch.hub.load",
        "torch.hub.download_url_to_file",
        "torch.hub.load_state_dict_from_url",
        "torch.utils.model_zoo.load_url",
        "tiktoken.get_encoding",
        "kagglehub.dataset_download",
        "kagglehub.model_download",
    }
)
# Packages that talk to a remote hub (`huggingface_hub.hf_hub_download`, `snapshot_download` ...).
NET_PACKAGES: tuple[str, ...] = ("huggingface_hub", "hf_transfer", "modelscope")
# Hubs whose `X.from_pretrained(name)` downloads unless given a local path.
PRETRAINED_HUBS: tuple[str, ...] = ("transformers", "sentence_transformers", "diffusers", "timm", "peft")
# Programs that reach the network when a subprocess runs them.
NET_PROGRAMS: frozenset[str] = frozenset(
    {
        "curl",
        "wget",
        "git",
        "pip",
        "pip3",
        "huggingface-cli",
        "hf",
        "aria2c",
        "scp",
        "rsync",
        "ssh",
        "sftp",
        "ftp",
        "nc",
        "netcat",
        "apt",
        "apt-get",
        "conda",
        "gsutil",
        "aws",
        "az",
        "rclone",
        "gdown",
        "kaggle",
        "uv",
        "npm",
        "telnet",
    }
)
# Calls that run another program.
SUBPROCESS_CALLS: frozenset[str] = frozenset(
    {
        "subprocess.run",
        "subprocess.call",
        "subprocess.check_call",
        "subprocess.check_output",
        "subprocess.Popen",
        "subprocess.getoutput",
        "subprocess.getstatusoutput",
        "os.system",
        "os.popen",
        "os.execv",
        "os.execvp",
        "os.execl",
        "os.execlp",
        "os.spawnv",
        "os.spawnl",
        "pty.spawn",
    }
)

# ----------------------------------------------------------------------------------------- data provenance (taint)
# Dataset loaders that take a named split: `load_dataset(name, split="train")` returns that split's content
# whatever the hub or folder (a training split is training data).
SPLIT_LOADERS: frozenset[str] = frozenset({"datasets.load_dataset", "datasets.load_from_disk"})
# Loss functions (last component of an import-resolved `torch...` name): their result is a number about the data
# (outputs and targets), not the data; the taint analysis marks it as model/loss output.
LOSS_FUNCS: frozenset[str] = frozenset(
    {
        "cross_entropy",
        "nll_loss",
        "kl_div",
        "mse_loss",
        "l1_loss",
        "smooth_l1_loss",
        "huber_loss",
        "binary_cross_entropy",
        "binary_cross_entropy_with_logits",
        "poisson_nll_loss",
    }
)
# Restoring a module from a snapshot: `m.load_state_dict(saved)` where `saved` was taken with one of these before
# an update; the update is then transient (per-window test-time training), not training.
SNAPSHOT_CALLS: frozenset[str] = frozenset({"state_dict", "deepcopy", "clone", "copy"})
RESTORE_ATTR = "load_state_dict"

# ------------------------------------------------------------------------------------- document-segmented attention
# Attention over packed rows isolated per document (several documents in one row, each attending only to itself):
# varlen kernels taking cumulative sequence lengths, block-diagonal masks built from sequence lengths. Matched on
# the called name's last component; any call with a `cu_seqlens*` keyword counts too.
SEGMENT_ATTENTION_CALLS: frozenset[str] = frozenset(
    {
        "flash_attn_varlen_func",
        "flash_attn_varlen_qkvpacked_func",
        "flash_attn_varlen_kvpacked_func",
        "varlen_attn",
        "from_seqlens",
    }
)
SEGMENT_KEYWORD_PREFIX = "cu_seqlens"

# ------------------------------------------------------------------------------------------ scoring and targets
# (auditor.flow.targets / target_queries, PG301-PG303) Matched on the called name's last component.
# Where a probability becomes a score: the logarithm family, and losses that take the realized token as label.
LOG_CALLS: frozenset[str] = frozenset({"log", "log2", "log10", "log1p", "logaddexp", "logaddexp2"})
LABEL_LOSSES: frozenset[str] = frozenset({"cross_entropy", "nll_loss"})
# Distributions over the vocabulary, and the reductions that normalize a row (`p / p.sum(-1)`).
DIST_CALLS: frozenset[str] = frozenset({"softmax", "log_softmax"})
NORMALIZERS: frozenset[str] = frozenset({"sum", "logsumexp", "nansum"})
# Table reads by index besides subscripts (`np.take(t, k)`, `t.index_select(0, k)`); `d.get(k)` is one too.
LOOKUP_CALLS: frozenset[str] = frozenset({"take", "index_select", "take_along_dim", "take_along_axis"})
# Calls that keep a token a token (casts, views, integer arithmetic, hashing): what a helper may apply to a
# parameter for its result to still carry that parameter's token.
TOKEN_PRESERVING_CALLS: frozenset[str] = frozenset(
    {
        "int", "long", "astype", "to", "view", "reshape", "flatten", "ravel", "squeeze", "unsqueeze", "contiguous",
        "clone", "copy", "cpu", "cuda", "numpy", "item", "tolist", "tuple", "list", "abs", "uint64", "int64",
        "uint32", "int32", "asarray", "array", "as_tensor", "tensor", "from_numpy", "bitwise_xor", "bitwise_and",
        "bitwise_or", "remainder", "fmod", "mul", "add", "sub", "hash", "expand", "expand_as", "index_put",
    }
)  # fmt: skip
# In-place increments of a count table or its total (`t.scatter_add_(0, keys, ones)`, `np.add.at(t, keys, 1)`).
INCREMENT_CALLS: frozenset[str] = frozenset({"scatter_add_", "index_add_", "add_", "index_put_"})
# Stacking per-expert values into one tensor (a mixture's experts), and per-position choices of an extremum.
STACK_CALLS: frozenset[str] = frozenset({"stack", "cat", "concatenate", "hstack", "vstack", "column_stack"})
MINMAX_CALLS: frozenset[str] = frozenset({"min", "max", "minimum", "maximum", "fmin", "fmax"})
