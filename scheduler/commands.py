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


def _open(url: str):
    from db.database import open_database

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
    from models.training import TrainConfig, train_siamese

    positives = _folder_files(args.positive, "positive")
    negatives = _folder_files(args.negative, "negative")
    try:
        config = TrainConfig(
            epochs=args.epochs, pairs_per_epoch=args.pairs_per_epoch, batch_size=args.batch_size,
            learning_rate=args.lr, margin=args.margin, threshold=args.threshold, augment=not args.no_augment,
            max_rotation_degrees=args.rotation, seed=args.seed, weights=args.weights,
        )
        preprocess = PreprocessConfig(image_size=args.image_size, resize_mode=args.resize_mode)
        result = train_siamese(positives, negatives, args.out, config, preprocess, select_device(args.device))
    except (ValueError, RuntimeError, FileNotFoundError) as error:
        raise UserError(str(error)) from error

    print(f"wrote {result.checkpoint}; model version (sha256) {result.version}")
    print(f"starting weights: {result.weights_origin}")
    if result.skipped_files:
        print(f"skipped {len(result.skipped_files)} unreadable images", file=sys.stderr)
    return 0


def run_enroll(args) -> int:
    from scheduler.enroll import enroll
    from worker.settings import Settings

    settings = Settings()
    positives = _folder_files(args.positive, "positive")
    negatives = _folder_files(args.negative, "negative")
    database = _open(settings.database_url)
    try:
        result = enroll(database.sessions, args.model, positives, negatives, name=args.name, device=args.device,
                        max_image_pixels=settings.max_image_pixels)
    except (CheckpointError, ValueError, RuntimeError) as error:
        raise UserError(str(error)) from error
    finally:
        database.dispose()

    print(f"exemplar set {result.exemplar_set_id}: {result.positives} positive, {result.negatives} negative exemplars, "
          f"model version {result.model_sha256[:12]}")
    if result.skipped:
        print(f"skipped {len(result.skipped)} unreadable exemplars", file=sys.stderr)
    return 0


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


def run_results(args) -> int:
    from db import repository
    from scheduler.results import format_csv, format_json, format_table
    from worker.settings import Settings

    database = _open(Settings().database_url)
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
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    import torch

    from models.checkpoint import load_checkpoint
    from models.device import select_device
    from models.evaluation import held_out_pairs, pair_metrics
    from models.inference import decode_many, embed_images

    positives = _folder_files(args.positive, "positive")
    negatives = _folder_files(args.negative, "negative")
    device = select_device(args.device)
    try:
        checkpoint = load_checkpoint(args.model, device=device)
    except CheckpointError as error:
        raise UserError(str(error)) from error
    threshold = args.threshold if args.threshold is not None else checkpoint.threshold

    paths = positives + negatives
    labels = np.array([1] * len(positives) + [0] * len(negatives))
    with ThreadPoolExecutor(max_workers=4) as executor:
        decoded = decode_many(paths, checkpoint.preprocess, executor)
    kept = [index for index, item in enumerate(decoded) if item.image is not None]
    embeddings = torch.cat([
        embed_images(checkpoint.embedder, torch.stack([decoded[index].image for index in kept[start : start + 32]]),
                     checkpoint.preprocess, device)
        for start in range(0, len(kept), 32)
    ])

    try:
        pairs, distances = held_out_pairs(embeddings, labels[kept], args.pairs, args.seed)
    except ValueError as error:
        raise UserError(str(error)) from error
    metrics = pair_metrics(distances, pairs.similar, threshold)
    print(f"held-out images: {int(labels[kept].sum())} positive, {int((labels[kept] == 0).sum())} negative "
          f"({len(paths) - len(kept)} unreadable)")
    print(f"pairs: {metrics.total} (half similar), threshold {threshold:.3f}")
    print(f"pair accuracy {metrics.accuracy:.3f}, precision {metrics.precision:.3f}, recall {metrics.recall:.3f}, "
          f"F1 {metrics.f1:.3f}")
    print(f"confusion (similar = positive class): TP {metrics.true_positive}, FP {metrics.false_positive}, "
          f"TN {metrics.true_negative}, FN {metrics.false_negative}")
    return 0
