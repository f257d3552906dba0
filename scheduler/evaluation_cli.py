"""Subcommands for honest evaluation: ``split``, ``calibrate`` and ``tip``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parsers(sub) -> None:
    """Add the split, calibrate and tip subcommands to the ``cargoscan`` parser."""
    split = sub.add_parser("split", help="write a train/validation/test manifest that keeps near-duplicates together")
    split.add_argument("--positive", type=Path, required=True, help="folder of positive scans")
    split.add_argument("--negative", type=Path, required=True, help="folder of negative scans")
    split.add_argument("--out", type=Path, required=True, help="manifest to write: .json, or CSV for any other suffix")
    split.add_argument("--fractions", default="0.7,0.15,0.15", help="train,validation,test shares of each label's images")
    split.add_argument("--seed", type=int, default=0)
    split.add_argument("--similarity", type=float, default=0.9,
                       help="thumbnail correlation (0-1) at or above which two images count as near-duplicates")
    split.add_argument("--same-size-families", action="store_true",
                       help="also group images of identical pixel size (catches rotated or zoomed copies on one canvas)")
    split.set_defaults(handler=run_split)

    calibrate = sub.add_parser("calibrate", help="set the model version's threshold for a target false-alarm rate")
    calibrate.add_argument("--model", type=Path, required=True, help="checkpoint file (enrolled already)")
    calibrate.add_argument("--manifest", type=Path, required=True, help="split manifest")
    calibrate.add_argument("--split", default="validation", help="split whose negatives set the threshold")
    calibrate.add_argument("--far", type=float, default=0.05, help="target false-alarm rate, a fraction (0.05 = 5%%)")
    calibrate.add_argument("--exemplar-set", type=int, help="exemplar set id (default: the newest)")
    calibrate.add_argument("--device", help="cpu, cuda or cuda:N")
    calibrate.set_defaults(handler=run_calibrate)

    tip = sub.add_parser("tip", help="build a threat image projection set (positives, negatives, manifest) from clean scans")
    tip.add_argument("--scans", type=Path, required=True, help="folder of clean scans (searched recursively)")
    tip.add_argument("--out", type=Path, required=True, help="output folder")
    tip.add_argument("--items", type=Path, help="folder of isolated item transmission images (default: procedural items)")
    tip.add_argument("--fractions", default="0.7,0.15,0.15", help="train,validation,test shares of the clean scans")
    tip.add_argument("--seed", type=int, default=0)
    tip.add_argument("--max-side", type=int, default=1024, help="shrink scans to this longer side in pixels (0 keeps them)")
    tip.add_argument("--scale", default="0.2,0.5", help="item's longer side as a fraction of the cargo height, low,high")
    tip.add_argument("--thickness", default="0.5,2.0", help="range of the exponent applied to item transmission, low,high")
    tip.add_argument("--rotation", type=float, default=180.0, help="maximum item rotation in degrees")
    tip.add_argument("--paired", action="store_true",
                     help="write every scan both as a negative and, with an item, as a positive")
    tip.set_defaults(handler=run_tip)


def run_split(args: argparse.Namespace) -> int:
    from models.families import FamilyRules
    from models.splits import parse_fractions
    from scheduler.commands import UserError
    from scheduler.labelled import SetError, from_folders
    from scheduler.split import split_folders

    try:
        images = from_folders(args.positive, args.negative)
        rules = FamilyRules(similarity=args.similarity, same_size=args.same_size_families)
        split_folders(images.positives, images.negatives, args.out, parse_fractions(args.fractions), args.seed, rules)
    except (SetError, ValueError) as error:
        raise UserError(str(error)) from error
    return 0


def run_calibrate(args: argparse.Namespace) -> int:
    from models.calibration import negatives_needed
    from models.checkpoint import CheckpointError
    from models.device import select_device
    from scheduler.calibrate import calibrate_model
    from scheduler.commands import UserError, _open
    from scheduler.labelled import SetError, from_manifest
    from worker.settings import Settings

    database = _open(Settings().database_url)
    try:
        validation = from_manifest(args.manifest, args.split)
        result = calibrate_model(database.sessions, args.model, validation, args.far, select_device(args.device),
                                 exemplar_set_id=args.exemplar_set)
    except (SetError, CheckpointError, ValueError) as error:
        raise UserError(str(error)) from error
    finally:
        database.dispose()

    calibration = result.calibration
    print(f"threshold {calibration.threshold:.4f} for {calibration.target_false_alarm:.1%} false alarms: it flags "
          f"{calibration.achieved_false_alarm:.1%} of {calibration.negatives} validation negatives")
    needed = negatives_needed(calibration.target_false_alarm)
    if calibration.negatives < needed:
        # One flagged negative already exceeds the target, so the threshold can only clear them all.
        print(f"warning: {calibration.negatives} validation negatives are too few for a {calibration.target_false_alarm:.1%} "
              f"target. Below {needed} negatives none may be flagged, so the threshold lies above all of them. "
              "Calibrate on more clean scans for a meaningful rate.", file=sys.stderr)
    if result.validation_detection is not None:
        print(f"detection on the validation positives at this threshold: {result.validation_detection:.1%}")
    print(f"stored on model version {result.model_sha256[:12]} (exemplar set {result.exemplar_set_id}); "
          f"screening uses it unless --threshold or CARGOSCAN_THRESHOLD is set")
    return 0


def run_tip(args: argparse.Namespace) -> int:
    from models.imaging import ScanReadError
    from models.splits import parse_fractions
    from models.tip import TipConfig
    from scheduler.commands import UserError, _folder_files
    from scheduler.tip import build_tip_set

    scans = _folder_files(args.scans, "clean")
    items = _folder_files(args.items, "item") if args.items is not None else []
    try:
        config = TipConfig(scale=_pair(args.scale, "--scale"), rotation_degrees=args.rotation,
                           thickness=_pair(args.thickness, "--thickness"))
        summary = build_tip_set(scans, args.out, items, config, parse_fractions(args.fractions), args.seed,
                                args.max_side or None, paired=args.paired)
    except (ValueError, ScanReadError) as error:
        raise UserError(str(error)) from error

    print(f"{summary.positives} positives and {summary.negatives} negatives; {len(summary.failed)} scans skipped")
    return 0


def _pair(text: str, option: str) -> tuple[float, float]:
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError as error:
        raise ValueError(f"{option} takes two numbers separated by a comma, got {text!r}") from error
    return low, high
