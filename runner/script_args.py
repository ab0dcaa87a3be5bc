"""What a training script's argparse accepts, read statically, and the `args` table `runner repo add`
proposes from it. The script is parsed with `ast`: nothing of the repo is run or imported, so a flag
built at run time (a loop, a helper in another module, a config system) is reported as not told,
never guessed.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

MAX_SOURCE = 2_000_000
"""A script larger than this (bytes) is not parsed: no training entry point is that long."""

NOT_TOLD = "# runner could not tell: "
"""How a proposal marks what the script's source did not say."""


@dataclass
class Argument:
    """One `add_argument` call: its option strings (or positional name) and what is literal in it."""

    flags: list[str]
    dest: str
    positional: bool
    required: bool
    takes_value: bool
    nargs: object = None  # int, "?", "*", "+" or None
    type: str | None = None
    default: object = None
    has_default: bool = False
    help: str = ""
    line: int = 0

    @property
    def name(self) -> str:
        """The flag a person types: its longest option string, or the positional's name."""
        return max(self.flags, key=len) if self.flags else self.dest


@dataclass
class Proposal:
    """The proposed `args` (template and optional), `defaults`, and comment lines for the table."""

    template: list[str] = field(default_factory=list)
    optional: dict[str, list[str]] = field(default_factory=dict)
    defaults: dict = field(default_factory=dict)
    mapped: dict[str, str] = field(default_factory=dict)  # runner field -> the script's flag
    notes: list[str] = field(default_factory=list)  # lines starting with NOT_TOLD, or "# " for information
    writes_to_output_dir: bool = False


_LITERAL = (ast.Constant, ast.List, ast.Tuple, ast.UnaryOp, ast.Dict, ast.Set)
_VALUELESS = {"store_true", "store_false", "store_const", "count", "help", "version", "append_const"}


def _literal(node):
    """(True, value) when the node is a literal; (False, None) otherwise."""
    if not isinstance(node, _LITERAL):
        return False, None
    try:
        return True, ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False, None


def read_arguments(source: str, path: str = "the script") -> tuple[list[Argument], list[str]]:
    """([Argument], notes) of every `<anything>.add_argument(...)` call in the source, in order.
    The notes say what could not be read (a syntax error, a flag that is not a literal)."""
    if len(source) > MAX_SOURCE:
        return [], [f"{NOT_TOLD}{path} is {len(source)} bytes; not read"]
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        where = f" (line {e.lineno})" if getattr(e, "lineno", None) else ""
        return [], [f"{NOT_TOLD}{path} does not parse as Python 3{where}: {getattr(e, 'msg', None) or e}; map its flags by hand"]
    out, notes = [], []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument"):
            continue
        names = []
        for a in node.args:
            ok, v = _literal(a)
            if not ok or not isinstance(v, str):
                names = None
                break
            names.append(v)
        if not names:
            notes.append(f"{NOT_TOLD}{path}:{node.lineno}: an add_argument whose name is computed at run time")
            continue
        kw = {k.arg: k.value for k in node.keywords if k.arg}
        values = {k: _literal(v) for k, v in kw.items()}
        flags = [n for n in names if n.startswith("-")]
        positional = not flags
        action = values.get("action", (False, None))[1] if "action" in kw else None
        nargs = values["nargs"][1] if "nargs" in kw and values["nargs"][0] else None
        dest = values["dest"][1] if "dest" in kw and values["dest"][0] else None
        if not dest:
            long = [f for f in flags if f.startswith("--")]
            dest = (long[0] if long else (flags[0] if flags else names[0])).lstrip("-").replace("-", "_")
        type_ = kw.get("type")
        required_ok, required = values.get("required", (True, False))
        help_ok, help_ = values.get("help", (False, ""))
        out.append(Argument(
            flags=flags, dest=dest, positional=positional,
            required=(positional and nargs not in ("?", "*")) or bool(required_ok and required),
            takes_value=action not in _VALUELESS if isinstance(action, str) else "action" not in kw,
            nargs=nargs, type=type_.id if isinstance(type_, ast.Name) else (ast.unparse(type_) if type_ is not None else None),
            default=values["default"][1] if "default" in kw and values["default"][0] else None,
            has_default="default" in kw, help=help_ if help_ok and isinstance(help_, str) else "", line=node.lineno))
    out.sort(key=lambda a: a.line)
    if not out:
        libs = sorted({m.split(".")[0] for m in imported(tree)} & OTHER_CLIS)
        if libs:
            notes.append(f"{NOT_TOLD}{path} takes its options through {', '.join(libs)}, not argparse; write args.template by hand")
    return out, notes


OTHER_CLIS = {"hydra", "click", "fire", "typer", "absl", "jsonargparse", "tyro", "omegaconf"}
"""Option libraries whose flags are not add_argument calls: named in the note, not read."""


def imported(tree: ast.AST) -> list[str]:
    """The dotted module names a parsed script imports, in order (a relative import keeps its dots)."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            out += [base] + [f"{base}.{a.name}" if node.module else f"{base}{a.name}" for a in node.names]
    return out


def local_modules(source: str, entry: str, files: set[str]) -> list[str]:
    """Files of the repo (`files`: its paths) that the entry script imports, where a parser defined
    in another module may be (`from opts import get_parser`); looked for beside the entry and at
    the root."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    folder = entry.rsplit("/", 1)[0] + "/" if "/" in entry else ""
    out = []
    for name in imported(tree):
        rel = name.lstrip(".").replace(".", "/")
        if not rel:
            continue
        for base in dict.fromkeys((folder, "")):
            for cand in (f"{base}{rel}.py", f"{base}{rel}/__init__.py"):
                if cand in files and cand != entry and cand not in out:
                    out.append(cand)
    return out


def _squash(flag: str) -> str:
    return re.sub(r"[^a-z0-9]", "", flag.lower())


# runner's fields and the flags that usually carry them, in order of preference (compared without
# dashes, underscores or case). Dataset parts are offered only where the table's format has them.
ALIASES = {
    "epochs": ("epochs", "epoch", "numepochs", "nepochs", "maxepochs", "totalepochs", "trainepochs", "nepoch", "numepoch"),
    "batch_size": ("batchsize", "bs", "batch", "trainbatchsize", "perdevicetrainbatchsize"),
    "lr": ("lr", "learningrate", "baselr", "lr0", "blr", "initlr"),
    "input_size": ("imgsize", "imgsz", "inputsize", "imagesize", "img", "size", "cropsize", "resolution"),
    "workers": ("workers", "numworkers", "nworkers", "j"),
    "seed": ("seed", "randomseed", "manualseed"),
    "output_dir": ("outputdir", "outdir", "output", "out", "savedir", "workdir", "logdir", "expdir", "savepath",
                   "checkpointdir", "ckptdir", "project", "saveto"),
    "pretrained_weights": ("weights", "pretrainedweights", "pretrained"),
    "num_classes": ("numclasses", "nbclasses", "nclasses", "nc", "classnum", "numclass", "classes"),
    "data": ("data", "datapath", "dataset", "datadir", "dataroot", "datasetdir", "root", "datasetpath"),
    "train_dir": ("traindir", "trainpath", "traindata", "trainroot", "train"),
    "val_dir": ("valdir", "valpath", "valdata", "valroot", "val", "validdir", "evaldir"),
    "train_images": ("trainimages", "trainimgdir", "trainimagedir", "trainimg"),
    "train_masks": ("trainmasks", "trainmaskdir", "trainmask", "trainlabels"),
    "val_images": ("valimages", "valimgdir", "valimagedir", "valimg"),
    "val_masks": ("valmasks", "valmaskdir", "valmask", "vallabels"),
    "classes_file": ("classesfile", "classfile", "classnames", "classes"),
    "image_dir": ("imagedir", "imgdir", "images", "imageroot", "imgroot"),
    "anno_path": ("annotations", "annfile", "annopath", "annpath", "ann", "anno", "annotation", "trainann"),
    "dataset_dir": ("datasetdir",),
    "train_captions": ("traincaptions", "trainann", "traincaption"),
    "val_captions": ("valcaptions", "valann", "valcaption"),
}

GENERAL = ("epochs", "batch_size", "lr", "input_size", "workers", "seed", "output_dir", "pretrained_weights", "num_classes")
"""Fields every job has whatever its dataset's format. ({device} is not offered: it is "cpu" or GPU
indices "0,1", a form a script's --device may not take; a person maps it, or args.cpu / args.gpu.)"""

FALLBACK = {"epochs": 1, "batch_size": 8, "lr": 0.001, "input_size": 224}
"""A value for a field the script requires and gives no default for (`defaults` in the table)."""

ALWAYS_SET = {"output_dir", "workers", "seed", "num_classes", "data", "train_dir", "val_dir", "train_images", "train_masks",
              "val_images", "val_masks", "classes_file", "image_dir", "anno_path", "dataset_dir", "train_captions", "val_captions"}
"""Fields a job always has a value for (the rest may be unset: they go to args.optional unless required)."""


def _matches(arg: Argument, alias: str, fieldname: str) -> bool:
    if not arg.takes_value:
        return False
    names = {_squash(n) for n in arg.flags} | {_squash(arg.dest)}
    if alias not in names:
        return False
    if fieldname == "classes_file" and arg.type in ("int", "float"):
        return False  # --classes 10 is a count
    if fieldname == "num_classes" and (arg.type != "int" if alias == "classes" else arg.type not in (None, "int")):
        return False  # --classes names.txt is a file; --classes 10 a count
    return True


def _tokens(arg: Argument, placeholder: str) -> list[str]:
    n = arg.nargs if isinstance(arg.nargs, int) and 0 < arg.nargs <= 4 else 1
    return ([] if arg.positional else [arg.name]) + [placeholder] * n


def propose(args: list[Argument], parts: tuple[str, ...], entry: str = "the script", read_notes: list[str] = ()) -> Proposal:
    """The `args` a table would start from: each runner field (epochs, batch size, the dataset's
    `parts`, the output folder...) mapped to the script's flag that carries it; a required flag
    that maps to nothing is marked, never invented. `parts`: the dataset fields of the table's format."""
    p = Proposal(notes=list(read_notes))
    offered = [f for f in ALIASES if f in GENERAL or f in parts]
    used: dict[int, str] = {}
    for f in offered:
        for alias in ALIASES[f]:
            hit = next((i for i, a in enumerate(args) if i not in used and _matches(a, alias, f)), None)
            if hit is not None:
                used[hit] = f
                break
    positional, template = [], []
    for i, a in enumerate(args):
        f = used.get(i)
        if f is None:
            continue
        p.mapped[f] = a.name
        tokens = _tokens(a, "{" + f + "}")
        if f in ALWAYS_SET or a.required or a.positional:
            if f in FALLBACK and not (a.has_default and a.default is not None):
                p.defaults[f] = FALLBACK[f]  # (a field with no fallback, e.g. weights, is the job's to give)
            (positional if a.positional else template).extend(tokens)
        else:
            p.optional[f] = tokens  # the script's own default unless a job sets the field
    p.template = positional + template
    if p.defaults:
        p.notes.append(f"# {', '.join(p.defaults)}: {entry} requires a value and gives no default; the table's defaults are runner's guesses")
    p.writes_to_output_dir = "output_dir" in p.mapped
    unmapped = [a for i, a in enumerate(args) if i not in used]
    for a in unmapped:
        if a.required:
            what = f"{a.name} (required" + (f", type={a.type}" if a.type else "") + ")" + (f": {a.help[:80]}" if a.help else "")
            p.notes.append(f"{NOT_TOLD}{what}; add it to template, with a value or a {{field}} set in defaults")
    if not args:
        if not read_notes:
            p.notes.append(f"{NOT_TOLD}{entry} has no add_argument call (its flags come from elsewhere: a config system, "
                           "another module); write args.template by hand")
    elif "output_dir" not in p.mapped:
        p.notes.append(f"{NOT_TOLD}where {entry} writes (no output flag): checkpoints are looked for under {{src}}/")
    others = [a.name for a in unmapped if not a.required and not a.positional]
    if others:
        p.notes.append(f"# other flags of {entry} (its own defaults apply): " + ", ".join(others[:24]) + (" ..." if len(others) > 24 else ""))
    return p
