"""The ``cargoscan`` command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from db.engine import redact_url

logger = logging.getLogger("cargoscan")


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    _accept_db_everywhere(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not args.verbose:
        # Alembic announces every plugin and migration step at INFO.
        logging.getLogger("alembic").setLevel(logging.WARNING)
    if args.db:
        os.environ["CARGOSCAN_DATABASE_URL"] = args.db
    if getattr(args, "broker", None):
        os.environ["CARGOSCAN_BROKER_URL"] = args.broker

    from pydantic import ValidationError

    from scheduler.commands import UserError

    try:
        return int(args.handler(args) or 0)
    except UserError as error:
        print(f"error: {redact_url(str(error))}", file=sys.stderr)
        return 2
    except ValidationError as error:
        # Settings come from CARGOSCAN_* variables and from options of the same name.
        for problem in error.errors():
            name = "CARGOSCAN_" + "_".join(str(part) for part in problem["loc"]).upper()
            print(f"error: invalid setting {name}: {problem['msg']}, got {redact_url(repr(problem.get('input')))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _accept_db_everywhere(parser: argparse.ArgumentParser) -> None:
    """Let ``--db`` follow the subcommand too (``cargoscan results --db URL``)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                if "--db" not in subparser._option_string_actions:
                    # SUPPRESS keeps a subcommand from resetting a --db given before it.
                    subparser.add_argument("--db", default=argparse.SUPPRESS, help="database URL; the same as --db before the command")
                _accept_db_everywhere(subparser)


def _build_parser() -> argparse.ArgumentParser:
    from scheduler import commands

    parser = argparse.ArgumentParser(prog="cargoscan", description="Screen X-ray cargo scans with a Siamese network.")
    parser.add_argument("--db", help="database URL (default: CARGOSCAN_DATABASE_URL or sqlite:///cargoscan.db)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="train, enroll and screen synthetic scans end to end (no data needed)")
    demo.add_argument("--out", type=Path, default=Path("demo-output"), help="folder for the scans, checkpoint and SQLite file")
    demo.set_defaults(handler=commands.run_demo_command)

    train = sub.add_parser("train", help="train the Siamese embedder on labelled scans")
    train.add_argument("--positive", type=Path, help="folder of scans that contain an item of interest")
    train.add_argument("--negative", type=Path, help="folder of clean scans")
    train.add_argument("--manifest", type=Path, help="split manifest (from 'cargoscan split'), instead of the folders")
    train.add_argument("--split", default="train", help="manifest split to train on")
    train.add_argument("--validation-split", default="validation",
                       help="manifest split scored after every epoch ('none' to skip); the best epoch is kept")
    train.add_argument("--validation-pairs", type=int, default=500, help="validation pairs, drawn once with a fixed seed")
    train.add_argument("--select-by", choices=("loss", "accuracy"), default="loss",
                       help="validation metric that picks the kept epoch")
    train.add_argument("--patience", type=int, help="stop after this many epochs without validation improvement")
    train.add_argument("--curves", type=Path, help="PNG of per-epoch loss and accuracy (default: next to --out)")
    train.add_argument("--out", type=Path, required=True, help="checkpoint file to write")
    train.add_argument("--epochs", type=int, default=20)
    train.add_argument("--pairs-per-epoch", type=int, default=1000, help="pairs drawn per epoch, half similar")
    train.add_argument("--batch-size", type=int, default=32, help="pairs per optimizer step")
    train.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate")
    train.add_argument("--margin", type=float, default=0.5, help="contrastive loss margin")
    train.add_argument("--threshold", type=float, default=0.5, help="distance at or below which a pair counts as similar")
    train.add_argument("--no-augment", action="store_true", help="disable flips and rotations")
    train.add_argument("--rotation", type=float, default=10.0, help="maximum rotation in degrees for augmentation")
    train.add_argument("--image-size", type=int, default=224, help="network input size in pixels (square)")
    train.add_argument("--resize-mode", choices=("stretch", "letterbox"), default="stretch",
                       help="stretch to a square (paper) or letterbox, which removes size and aspect cues")
    train.add_argument("--decode-oversampling", type=int, default=1,
                       help="decoded pixels per input pixel kept when large JPEGs are decoded at reduced scale")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--weights", default="imagenet",
                       help="starting weights: 'imagenet' (torchvision, downloads if not cached), 'none', or a local file")
    train.add_argument("--device", help="cpu, cuda or cuda:N (default: CUDA when present)")
    train.set_defaults(handler=commands.run_train)

    tiles = sub.add_parser("train-tiles", help="train a tile-mode embedder on scans with item boxes")
    tiles.add_argument("--manifest", type=Path, required=True, help="split manifest; positives need boxes (as 'cargoscan tip' writes)")
    tiles.add_argument("--annotations", type=Path, help="folder of VOC .xml or YOLO .txt files, or a CSV of boxes")
    tiles.add_argument("--split", default="train", help="manifest split to train on")
    tiles.add_argument("--validation-split", default="validation", help="split scored per scan after each epoch ('' for none)")
    tiles.add_argument("--out", type=Path, required=True, help="checkpoint file to write")
    tiles.add_argument("--scan-height", type=int, default=448, help="height in pixels scans are scaled to before tiling")
    tiles.add_argument("--tile-size", type=int, default=112, help="tile side in pixels (the network input)")
    tiles.add_argument("--stride", type=int, default=56, help="pixels between neighbouring tiles")
    tiles.add_argument("--intensity", choices=("log", "linear"), default="log",
                       help="network input: log-transmission (attenuation, the default) or transmission")
    # Tiles keep 2, the setting every tile result in docs/evaluation.md was measured with.
    tiles.add_argument("--decode-oversampling", type=int, default=2,
                       help="decoded pixels per scan pixel kept when large JPEGs are decoded at reduced scale")
    tiles.add_argument("--epochs", type=int, default=10)
    tiles.add_argument("--pairs-per-epoch", type=int, default=2000, help="tile pairs drawn per epoch, half similar")
    tiles.add_argument("--batch-size", type=int, default=32, help="pairs per optimizer step")
    tiles.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    tiles.add_argument("--margin", type=float, default=1.0, help="contrastive loss margin")
    tiles.add_argument("--threshold", type=float, default=0.5, help="tile distance to an item exemplar at or below which a scan is flagged")
    tiles.add_argument("--projections-per-scan", type=int, default=2, help="procedural items projected into each clean training scan")
    tiles.add_argument("--objective", choices=("novelty", "item"), default="novelty",
                       help="novelty: score tiles by distance to clear tiles; item: by distance to item tiles")
    tiles.add_argument("--score-rule", choices=("nearest_positive", "novelty", "margin"),
                       help="rule the model version screens by (default: novelty for --objective novelty, margin for item)")
    tiles.add_argument("--organic-share", type=float, default=0.5,
                       help="chance that a projected training item is organic (faint) rather than metal")
    tiles.add_argument("--background-pairs", type=float, default=0.5,
                       help="share of item pairs that set a projected item against the clean tile at its place")
    tiles.add_argument("--lr-schedule", choices=("cosine", "constant"), default="cosine",
                       help="cosine: decay the learning rate to 1%% of --lr over --epochs; constant: keep it")
    tiles.add_argument("--hard-negative-fraction", type=float, default=0.5, help="share of dissimilar pairs that use mined hard negatives")
    tiles.add_argument("--patience", type=int, help="stop after this many epochs without validation improvement")
    tiles.add_argument("--seed", type=int, default=0)
    tiles.add_argument("--weights", default="none", help="'imagenet', 'none' or a state-dict file of ResNet-18 weights")
    tiles.add_argument("--device", help="cpu, cuda or cuda:N (default: CUDA when present)")
    tiles.set_defaults(handler=commands.run_train_tiles)

    enroll = sub.add_parser("enroll", help="embed labelled exemplars and store them as an exemplar set")
    enroll.add_argument("--model", type=Path, required=True, help="checkpoint file")
    enroll.add_argument("--positive", type=Path, help="folder of positive exemplar scans")
    enroll.add_argument("--manifest", type=Path, help="split manifest, instead of the folders")
    enroll.add_argument("--split", default="train", help="manifest split whose images become exemplars")
    enroll.add_argument("--negative", type=Path, help="folder of negative exemplar scans")
    enroll.add_argument("--name", help="name of the exemplar set")
    enroll.add_argument("--annotations", type=Path,
                        help="item boxes for tile-mode models: folder of VOC .xml or YOLO .txt files, or a CSV")
    enroll.add_argument("--device", help="cpu, cuda or cuda:N")
    enroll.set_defaults(handler=commands.run_enroll)

    screen = sub.add_parser("screen", help="screen a folder in this process (no Redis)")
    screen.add_argument("folder", type=Path, help="folder of scans to screen (searched recursively for JPEG, PNG and TIFF)")
    screen.add_argument("--batch-size", type=int, help="scans per forward pass (default: CARGOSCAN_MAX_BATCH_SIZE or 32)")
    screen.add_argument("--threshold", type=float,
                        help="decision threshold (default: the model version's, set by enroll and by calibrate)")
    screen.add_argument("--exemplar-set", type=int, help="exemplar set id (default: the newest)")
    screen.add_argument("--device", help="cpu, cuda or cuda:N")
    screen.add_argument("--new-only", action="store_true", help="skip scans already recorded in the database")
    screen.set_defaults(handler=commands.run_screen)

    enqueue = sub.add_parser("enqueue", help="record scans and send one job per scan to the workers")
    enqueue.add_argument("folder", type=Path)
    enqueue.add_argument("--broker", help="broker URL (default: CARGOSCAN_BROKER_URL or redis://localhost:6379/0)")
    enqueue.add_argument("--queue", help="queue name (default: CARGOSCAN_QUEUE or cargoscan.scans)")
    enqueue.add_argument("--include-known", action="store_true", help="also send scans already recorded")
    enqueue.set_defaults(handler=commands.run_enqueue)

    from scheduler import beat

    nightly = sub.add_parser("nightly", help="show the nightly drop-folder run that Celery beat starts, or start it now")
    nightly.add_argument("--now", action="store_true", help="enqueue the new scans in CARGOSCAN_NIGHTLY_DROP_FOLDER at once")
    nightly.set_defaults(handler=beat.run_nightly_command)

    resend = sub.add_parser("resend-stale", help="send again the jobs of scans still queued after a timeout (lost messages)")
    resend.add_argument("--older-than-s", type=float, help="seconds a scan may stay queued (default: CARGOSCAN_STALE_QUEUED_AFTER_S)")
    resend.add_argument("--queue", help="queue name (default: CARGOSCAN_QUEUE)")
    resend.set_defaults(handler=commands.run_resend_stale)

    evaluate = sub.add_parser("evaluate", help="pair and screening metrics on held-out scans, next to a size-only baseline")
    evaluate.add_argument("--model", type=Path, required=True, help="checkpoint file")
    evaluate.add_argument("--positive", type=Path, help="folder of held-out positive scans")
    evaluate.add_argument("--negative", type=Path, help="folder of held-out negative scans")
    evaluate.add_argument("--manifest", type=Path, help="split manifest, instead of the folders")
    evaluate.add_argument("--split", default="test", help="manifest split to evaluate")
    evaluate.add_argument("--exemplar-split", default="train",
                          help="manifest split used as exemplars and to fit the size baseline ('none' to skip)")
    evaluate.add_argument("--validation-split", default="validation",
                          help="manifest split whose negatives calibrate a threshold for the report ('none' to skip)")
    evaluate.add_argument("--exemplar-positive", type=Path, help="folder of positive exemplars (with the folder options)")
    evaluate.add_argument("--exemplar-negative", type=Path, help="folder of negative exemplars (with the folder options)")
    evaluate.add_argument("--far", type=float, default=0.05, help="false-alarm rate to calibrate for, a fraction")
    evaluate.add_argument("--out", type=Path, help="folder for report.md, metrics.json and the PNG figures")
    evaluate.add_argument("--pairs", type=int, default=1000, help="pairs to draw, half similar")
    evaluate.add_argument("--threshold", type=float, help="decision threshold (default: the checkpoint's)")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--device", help="cpu, cuda or cuda:N")
    evaluate.add_argument("--annotations", type=Path,
                          help="tile-mode models: item boxes as a folder of VOC .xml or YOLO .txt files, or a CSV")
    evaluate.add_argument("--whole-model", type=Path,
                          help="tile-mode models: a whole-scan checkpoint evaluated on the same scans, reported side by side")
    evaluate.add_argument("--max-clear-exemplars", type=int, default=50_000,
                          help="tile-mode models: clear exemplar tiles kept for the novelty and margin scores (a random sample)")
    evaluate.set_defaults(handler=commands.run_evaluate)

    from scheduler import evaluation_cli

    evaluation_cli.add_parsers(sub)

    results = sub.add_parser("results", help="list scans and verdicts, flagged first")
    results.add_argument("--format", choices=("table", "csv", "json"), default="table")
    results.add_argument("--flagged-only", action="store_true")
    results.add_argument("--limit", type=int, help="at most this many rows")
    results.set_defaults(handler=commands.run_results)

    show = sub.add_parser("show", help="draw a scan with its tile-score heat map and the top tile's box")
    show.add_argument("scan_id", type=int, help="scan id, as 'cargoscan results' lists it")
    show.add_argument("--out", type=Path, required=True, help="PNG file to write")
    show.set_defaults(handler=commands.run_show)

    from scheduler import registry_commands

    models = sub.add_parser("models", help="list, register and activate model versions")
    models_sub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    models_sub.add_parser("list", help="model versions with their exemplar sets").set_defaults(handler=registry_commands.run_models_list)
    register = models_sub.add_parser("register", help="record a checkpoint as a model version")
    register.add_argument("checkpoint", type=Path)
    register.add_argument("--name", help="display name (default: the file name)")
    register.set_defaults(handler=registry_commands.run_models_register)
    activate = models_sub.add_parser("activate", help="make a model version and exemplar set the one workers use")
    activate.add_argument("model", help="model version id or sha256 prefix (6+ hex digits)")
    activate.add_argument("--exemplar-set", type=int, help="exemplar set id (default: the model's newest)")
    activate.set_defaults(handler=registry_commands.run_models_activate)

    rescore = sub.add_parser("rescore", help="give every screened scan a result from the active model and exemplar set")
    rescore.add_argument("--status", action="store_true", help="show progress instead of sending work")
    rescore.add_argument("--resend", action="store_true", help="also send scans an earlier rescore sent and that are still unscored")
    rescore.add_argument("--broker", help="broker URL (default: CARGOSCAN_BROKER_URL)")
    rescore.set_defaults(handler=registry_commands.run_rescore)

    diff = sub.add_parser("diff", help="scans newly flagged or cleared between two versions")
    diff.add_argument("old", help="model version id or sha256 prefix (its newest exemplar set), or set:ID")
    diff.add_argument("new", help="as OLD")
    diff.add_argument("--format", choices=("table", "csv"), default="table")
    diff.set_defaults(handler=registry_commands.run_diff)

    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    upgrade = db_sub.add_parser("upgrade", help="apply pending migrations")
    upgrade.set_defaults(handler=commands.run_db_upgrade)
    return parser


if __name__ == "__main__":
    sys.exit(main())
