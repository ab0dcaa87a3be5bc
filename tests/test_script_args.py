"""runner repo add's args proposal: a training script's argparse calls read with ast (nothing run)."""

from __future__ import annotations

import textwrap

from config_translators.repo import PART_FIELDS
from runner.script_args import NOT_TOLD, local_modules, propose, read_arguments


def proposal(source: str, fmt: str = "imagefolder"):
    found, notes = read_arguments(textwrap.dedent(source), "train.py")
    return propose(found, PART_FIELDS[fmt], "train.py", notes)


def test_flags_map_to_runner_fields_and_nothing_is_invented():
    p = proposal('''
        import argparse
        def get_args():
            parser = argparse.ArgumentParser()
            group = parser.add_argument_group("data")
            group.add_argument("--train_dir", required=True)
            group.add_argument("--val-dir", required=True)
            parser.add_argument("--num-epochs", type=int, required=True)
            parser.add_argument("-b", "--batch-size", type=int, default=16)
            parser.add_argument("--image_size", type=int, nargs=2, default=[32, 32])
            parser.add_argument("--save-dir", default="runs")
            parser.add_argument("--weights", required=True)
            parser.add_argument("--amp", action="store_true")
            parser.add_argument("--momentum", type=float, default=0.9)
            return parser.parse_args()
    ''')
    assert p.template == ["--train_dir", "{train_dir}", "--val-dir", "{val_dir}", "--num-epochs", "{epochs}", "--save-dir", "{output_dir}",
                          "--weights", "{pretrained_weights}"]
    assert p.optional == {"batch_size": ["--batch-size", "{batch_size}"], "input_size": ["--image_size", "{input_size}", "{input_size}"]}
    assert p.defaults == {"epochs": 1}  # required with no default: a starting value, said to be a guess (weights: the job's to give)
    assert "lr" not in p.mapped and "{lr}" not in str(p.template + list(p.optional.values()))  # the script has no such flag
    assert not [n for n in p.notes if n.startswith(NOT_TOLD)], p.notes
    assert "# other flags of train.py (its own defaults apply): --amp, --momentum" in p.notes


def test_what_it_cannot_tell_is_marked():
    p = proposal('''
        import argparse
        p = argparse.ArgumentParser()
        p.add_argument("config", help="the experiment's yaml")
        p.add_argument("--data", required=True)
        p.add_argument("--hyp", type=str, required=True)
        for name in EXTRA_FLAGS:
            p.add_argument(name, type=float)
    ''')
    assert p.template == ["--data", "{data}"]
    told = [n for n in p.notes if n.startswith(NOT_TOLD)]
    assert told == [f"{NOT_TOLD}train.py:8: an add_argument whose name is computed at run time",
                    f"{NOT_TOLD}config (required): the experiment's yaml; add it to template, with a value or a {{field}} set in defaults",
                    f"{NOT_TOLD}--hyp (required, type=str); add it to template, with a value or a {{field}} set in defaults",
                    f"{NOT_TOLD}where train.py writes (no output flag): checkpoints are looked for under {{src}}/"], told


def test_a_positional_dataset_and_the_formats_parts():
    p = proposal('''
        import argparse
        p = argparse.ArgumentParser()
        p.add_argument("--output", required=True)
        p.add_argument("root")
        p.add_argument("--train-images", required=True)
        p.add_argument("--train-masks", required=True)
        p.add_argument("--classes", type=int, default=2)
    ''', fmt="masks")
    assert p.template[:-2] == ["{data}", "--output", "{output_dir}", "--train-images", "{train_images}", "--train-masks", "{train_masks}"]
    assert p.template[-2:] == ["--classes", "{num_classes}"]  # a count runner knows: given, whatever the script's default
    # the same flags for an ImageFolder repo: a mask folder is not one of its parts
    q = proposal('''
        import argparse
        p = argparse.ArgumentParser()
        p.add_argument("--train-masks", required=True)
    ''')
    assert q.template == [] and any("--train-masks (required)" in n for n in q.notes)


def test_scripts_it_cannot_read():
    assert proposal("print 'python 2'\n").notes[0].startswith(f"{NOT_TOLD}train.py does not parse as Python 3 (line 1)")
    hydra = proposal("import hydra\n@hydra.main(config_path='conf')\ndef main(cfg):\n    pass\n")
    assert hydra.template == [] and hydra.notes == [f"{NOT_TOLD}train.py takes its options through hydra, not argparse; write args.template by hand"]
    bare = proposal("print('hi')\n")
    assert bare.template == [] and bare.notes[0].startswith(f"{NOT_TOLD}train.py has no add_argument call")


def test_a_parser_defined_in_an_imported_module_is_found_in_the_repo():
    source = "from utils.opts import get_parser\nfrom . import helpers\nimport numpy\n"
    files = {"tools/train.py", "tools/utils/opts.py", "utils/opts.py", "tools/helpers.py", "numpy.py.txt"}
    assert local_modules(source, "tools/train.py", files) == ["tools/utils/opts.py", "utils/opts.py", "tools/helpers.py"]
