"""Handlers of the ``cargoscan`` subcommands; each returns an exit status."""

from __future__ import annotations

import sys
from pathlib import Path

from sqlalchemy.exc import OperationalError

from db.engine import redact_url
from models.checkpoint import CheckpointError


class UserError(Exception):
    """An error the user can fix; printed without a traceback."""


def _settings(**overrides):
    from worker.settings import Settings

    return Settings(**{key: value for key, value in overrides.items() if value is not None})


def _open(url: str, must_exist: bool = False):
    from db.database import open_database
    from db.engine import normalize_url
    from sqlalchemy.engine import make_url

    parsed = make_url(normalize_url(url))
    if must_exist and parsed.get_backend_name() == "sqlite" and parsed.database and not Path(parsed.database).is_file():
        raise UserError(f"database file {parsed.database} does not exist; check the --db path")

    try:
        return open_database(url)
    except OperationalError as error:
        raise UserError(f"cannot open database {redact_url(url)}: {str(error.orig).strip().splitlines()[0]}") from error


def _folder_files(folder: Path | None, what: str) -> list[Path]:
    from models.scanfiles import list_scan_files

    if folder is None:
        return []
    try:
        files = list_scan_files(folder)
    except NotADirectoryError as error:
        raise UserError(str(error)) from error
    if not files:
        raise UserError(f"no {what} scan files (.jpg, .jpeg, .png, .tif, .tiff) under {folder}")
    return files


def run_demo_command(args) -> int:
    from scheduler.demo import run_demo

    run_demo(args.out)
    return 0


def run_train(args) -> int:
    from models.device import select_device
    from models.preprocess import PreprocessConfig
    from models.training import TrainConfig, ValidationData, train_siamese
    from scheduler.labelled import SetError, optional_split, resolve

    try:
        training = resolve(args.manifest, args.split, args.positive, args.negative, "training")
        held_out = optional_split(args.manifest, args.validation_split)
    except SetError as error:
        raise UserError(str(error)) from error
    validation = None
    if held_out is not None:
        validation = ValidationData(held_out.positives, held_out.negatives, held_out.families)

    try:
        config = TrainConfig(
            epochs=args.epochs, pairs_per_epoch=args.pairs_per_epoch, batch_size=args.batch_size,
            learning_rate=args.lr, margin=args.margin, threshold=args.threshold, augment=not args.no_augment,
            max_rotation_degrees=args.rotation, seed=args.seed, weights=args.weights,
            validation_pairs=args.validation_pairs, select_by=args.select_by, patience=args.patience,
        )
        preprocess = PreprocessConfig(
            image_size=args.image_size, resize_mode=args.resize_mode, decode_oversampling=args.decode_oversampling,
        )
        curves = args.curves or args.out.with_name(f"{args.out.stem}-curves.png")
        result = train_siamese(training.positives, training.negatives, args.out, config, preprocess,
                               select_device(args.device), validation=validation, curves=curves)
    except (ValueError, RuntimeError, FileNotFoundError) as error:
        raise UserError(str(error)) from error

    print(f"wrote {result.checkpoint} (epoch {result.best_epoch}); model version (sha256) {result.version}")
    print(f"starting weights: {result.weights_origin}")
    if result.skipped_files:
        print(f"skipped {len(result.skipped_files)} unreadable images", file=sys.stderr)
    return 0


def run_enroll(args) -> int:
    from scheduler.enroll import enroll
    from worker.settings import Settings

    from scheduler.labelled import SetError, resolve

    settings = Settings()
    try:
        exemplars = resolve(args.manifest, args.split, args.positive, args.negative, "exemplar")
        boxes = _exemplar_boxes(args, exemplars.paths)
    except SetError as error:
        raise UserError(str(error)) from error
    positives, negatives = exemplars.positives, exemplars.negatives
    database = _open(settings.database_url)
    try:
        result = enroll(database.sessions, args.model, positives, negatives, name=args.name, device=args.device,
                        max_image_pixels=settings.max_image_pixels, boxes=boxes)
    except (CheckpointError, ValueError, RuntimeError) as error:
        raise UserError(str(error)) from error
    finally:
        database.dispose()

    print(f"exemplar set {result.exemplar_set_id}: {result.positives} positive, {result.negatives} negative exemplars, "
          f"model version {result.model_sha256[:12]}")
    origin = "calibrated in this database" if result.calibrated else "the checkpoint's; 'cargoscan calibrate' sets one for a false-alarm rate"
    print(f"screening threshold {result.threshold:.4f} ({origin})")
    if result.skipped:
        print(f"skipped {len(result.skipped)} unreadable exemplars", file=sys.stderr)
    return 0


def _exemplar_boxes(args, paths) -> dict[str, list]:
    # Item boxes matter only to tile-mode models, which enroll the tiles on each item.
    from models.annotations import AnnotationError, boxes_for_images
    from scheduler.labelled import SetError
    from scheduler.tile_sets import labelled_scans

    boxes: dict[str, list] = {}
    if args.manifest is not None:
        boxes = {str(scan.path): list(scan.boxes) for scan in labelled_scans(args.manifest, args.split) if scan.boxes}
    if args.annotations is not None:
        try:
            boxes.update(boxes_for_images(paths, args.annotations))
        except AnnotationError as error:
            raise SetError(str(error)) from error
    return boxes


def run_screen(args) -> int:
    from scheduler.screen import screen_folder
    from worker.screener import ScreenerSetupError

    settings = _settings(max_batch_size=args.batch_size, threshold=args.threshold, exemplar_set_id=args.exemplar_set,
                         device=args.device, metrics_port=0)
    if settings.scan_root is None:
        settings = settings.model_copy(update={"scan_root": args.folder.resolve()})
    database = _open(settings.database_url)
    try:
        summary = screen_folder(database, settings, args.folder, rescreen=not args.new_only)
    except (ScreenerSetupError, CheckpointError, ValueError, NotADirectoryError) as error:
        raise UserError(str(error)) from error
    finally:
        database.dispose()

    for line in summary.lines():
        print(line)
    for uri, reason in summary.failures[:20]:
        print(f"failed: {uri}: {reason}", file=sys.stderr)
    return 0


def run_enqueue(args) -> int:
    from kombu.exceptions import OperationalError as BrokerError

    from scheduler.enqueue import enqueue_folder

    settings = _settings(queue=args.queue)
    if not args.folder.is_dir():
        raise UserError(f"scan folder not found: {args.folder}")
    database = _open(settings.database_url)
    try:
        summary = enqueue_folder(database, args.folder, settings.queue, include_known=args.include_known)
    except BrokerError as error:
        raise UserError(f"cannot reach the broker {redact_url(settings.broker_url)}: {error}") from error
    finally:
        database.dispose()

    print(f"found {summary.found} scans, sent {summary.sent} jobs to queue {settings.queue}, "
          f"skipped {summary.skipped} already recorded")
    return 0


def run_resend_stale(args) -> int:
    from kombu.exceptions import OperationalError as BrokerError

    from scheduler.enqueue import resend_stale

    settings = _settings(queue=args.queue)
    older_than = args.older_than_s if args.older_than_s is not None else settings.stale_queued_after_s
    database = _open(settings.database_url)
    try:
        count = resend_stale(database, settings.queue, older_than)
    except BrokerError as error:
        raise UserError(f"cannot reach the broker {redact_url(settings.broker_url)}: {error}") from error
    finally:
        database.dispose()
    print(f"sent {count} jobs again for scans queued longer than {older_than:.0f} s")
    return 0


def run_results(args) -> int:
    from db import repository
    from scheduler.results import format_csv, format_json, format_table
    from worker.settings import Settings

    database = _open(Settings().database_url, must_exist=True)
    try:
        with database.sessions() as session:
            rows = repository.list_results(session, limit=args.limit, flagged_only=args.flagged_only)
    finally:
        database.dispose()

    formatter = {"table": format_table, "csv": format_csv, "json": format_json}[args.format]
    sys.stdout.write(formatter(rows).rstrip("\n") + "\n")
    return 0


def run_db_upgrade(args) -> int:
    from db.migrate import current_revision
    from worker.settings import Settings

    url = Settings().database_url
    database = _open(url)
    revision = current_revision(database.engine)
    database.dispose()
    print(f"database {redact_url(url)} is at revision {revision}")
    return 0


def run_evaluate(args) -> int:
    from models.device import select_device
    from scheduler.evaluate import EvaluationError, run_evaluation

    try:
        run_evaluation(args, select_device(args.device))
    except (EvaluationError, CheckpointError) as error:
        raise UserError(str(error)) from error
    return 0


def run_train_tiles(args) -> int:
    from models.device import select_device
    from models.preprocess import PreprocessConfig
    from models.tile_training import TileTrainConfig, train_tiles
    from scheduler.labelled import SetError
    from scheduler.tile_sets import labelled_scans

    try:
        training = labelled_scans(args.manifest, args.split, args.annotations)
        validation = labelled_scans(args.manifest, args.validation_split, args.annotations) if args.validation_split else []
    except SetError as error:
        raise UserError(str(error)) from error

    try:
        config = TileTrainConfig(
            epochs=args.epochs, pairs_per_epoch=args.pairs_per_epoch, batch_size=args.batch_size, learning_rate=args.lr,
            margin=args.margin, threshold=args.threshold, projections_per_scan=args.projections_per_scan,
            hard_negative_fraction=args.hard_negative_fraction, patience=args.patience, seed=args.seed, weights=args.weights,
            objective=args.objective, score_rule=args.score_rule, lr_schedule=args.lr_schedule,
            organic_share=args.organic_share,
            background_pairs=args.background_pairs,
        )
        preprocess = PreprocessConfig(
            image_size=args.tile_size, mode="tiles", tile_scan_height=args.scan_height, tile_stride=args.stride,
            intensity=args.intensity, decode_oversampling=args.decode_oversampling,
        )
        result = train_tiles(training, args.out, config, preprocess, select_device(args.device), validation_scans=validation)
    except (ValueError, RuntimeError, FileNotFoundError) as error:
        raise UserError(str(error)) from error

    print(f"wrote {result.checkpoint} (epoch {result.best_epoch}); model version (sha256) {result.version}")
    print(f"trained on {result.positive_tiles} item tiles and {result.negative_tiles} clear tiles")
    for path, reason in result.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    return 0


def run_show(args) -> int:
    from scheduler.show import ShowError, show_scan

    settings = _settings(metrics_port=0)
    database = _open(settings.database_url, must_exist=True)
    try:
        shown = show_scan(database, settings, args.scan_id, args.out)
    except (ShowError, CheckpointError) as error:
        raise UserError(str(error)) from error
    finally:
        database.dispose()

    where = f", top tile at {shown.box} of {shown.tiles} tiles" if shown.box is not None else " (whole-scan model: no tiles)"
    print(f"scan {shown.scan_id} {shown.uri}: {shown.verdict}, {shown.score_rule} score {shown.score:.4f} "
          f"(threshold {shown.threshold:.4f}){where}")
    print(f"wrote {shown.out}")
    return 0
