"""Handlers of ``cargoscan models``, ``rescore`` and ``diff``."""

from __future__ import annotations

import csv
import io
import sys

from db import registry, repository
from db.rescore import changed_verdicts, rescore_progress
from scheduler.commands import UserError, _open, _settings
from scheduler.results import format_rows


def run_models_list(args) -> int:
    database = _open(_settings().database_url)
    try:
        with database.sessions() as session:
            versions = registry.list_versions(session)
            newest = repository.latest_exemplar_set(session)
            newest_id = None if newest is None else newest.id
    finally:
        database.dispose()

    if not versions:
        print("no model versions registered; run 'cargoscan models register FILE' or 'cargoscan enroll'")
        return 0
    rows = []
    for version in versions:
        sets = ", ".join(f"{set_id} ({positives}+/{negatives}-)" for set_id, _, positives, negatives in version.exemplar_sets) or "-"
        active = f"active (set {version.active_exemplar_set_id})" if version.active_exemplar_set_id else ""
        rows.append([str(version.id), version.sha256[:12], version.name, f"{version.threshold:.4f}", sets, str(version.results), active])
    print(format_rows(["id", "sha256", "name", "threshold", "exemplar sets", "results", "status"], rows))
    if newest_id is not None and not any(version.active_exemplar_set_id for version in versions):
        print(f"no model version activated: workers use the newest exemplar set ({newest_id}); "
              "'cargoscan models activate' pins one")
    return 0


def run_models_register(args) -> int:
    from db import repository
    from models.checkpoint import CheckpointError, load_checkpoint
    from scheduler.enroll import checkpoint_training_summary

    try:
        checkpoint = load_checkpoint(args.checkpoint)
    except CheckpointError as error:
        raise UserError(str(error)) from error

    database = _open(_settings().database_url)
    try:
        with database.sessions.begin() as session:
            version = repository.get_or_create_model_version(
                session, sha256=checkpoint.version, name=args.name or args.checkpoint.name,
                checkpoint_path=str(args.checkpoint.resolve()), preprocessing=checkpoint.preprocess.to_dict(),
                threshold=checkpoint.threshold, training=checkpoint_training_summary(checkpoint),
            )
            version_id = version.id
    finally:
        database.dispose()
    print(f"model version {version_id}: sha256 {checkpoint.version}")
    return 0


def run_models_activate(args) -> int:
    database = _open(_settings().database_url)
    try:
        with database.sessions.begin() as session:
            version = registry.find_model_version(session, args.model)
            selection = registry.activate(session, version.id, args.exemplar_set)
    except registry.RegistryError as error:
        raise UserError(str(error)) from error
    finally:
        database.dispose()
    print(f"active: model {selection.model_sha256[:12]} (version {selection.model_version_id}), "
          f"exemplar set {selection.exemplar_set_id}; workers switch before their next batch")
    return 0


def run_rescore(args) -> int:
    from kombu.exceptions import OperationalError as BrokerError

    from scheduler.rescore import RescoreError, rescore_archive

    settings = _settings()
    database = _open(settings.database_url)
    try:
        if args.status:
            return _print_status(database)
        summary = rescore_archive(database, settings, include_sent=args.resend)
    except RescoreError as error:
        raise UserError(str(error)) from error
    except BrokerError as error:
        raise UserError(f"cannot reach the broker: {error}; run 'cargoscan rescore' again to send the rest") from error
    finally:
        database.dispose()

    print(f"{summary.candidates} scans lacked a result from the active model and exemplar set: "
          f"{summary.scored_from_embeddings} scored from stored embeddings, {summary.sent} sent to queue "
          f"{settings.rescore_queue}, in {summary.seconds:.1f} s")
    return 0


def _print_status(database) -> int:
    with database.sessions() as session:
        selection = registry.active_selection(session)
        if selection is None:
            raise UserError("no exemplar set in the database; run 'cargoscan enroll' first")
        progress = rescore_progress(session, selection.model_version_id, selection.exemplar_set_id)

    share = progress.done / progress.screened if progress.screened else 1.0
    eta = progress.eta_seconds
    eta_text = "unknown (nothing scored in the last 5 minutes)" if eta is None else f"{eta / 60:.1f} min"
    print(f"active: model {selection.model_sha256[:12]}, exemplar set {selection.exemplar_set_id}")
    print(f"{progress.done} of {progress.screened} screened scans have a result from it ({share:.1%})")
    print(f"sent and waiting: {progress.sent_waiting}; not sent yet: {progress.not_sent}")
    print(f"scored in the last 5 minutes: {progress.scored_last_5_min}; estimated time left: {eta_text}")
    return 0


def run_diff(args) -> int:
    database = _open(_settings().database_url)
    try:
        with database.sessions() as session:
            old = _selection(session, args.old)
            new = _selection(session, args.new)
            changes = changed_verdicts(session, (old.model_version_id, old.exemplar_set_id), (new.model_version_id, new.exemplar_set_id))
    except registry.RegistryError as error:
        raise UserError(str(error)) from error
    finally:
        database.dispose()

    header = ["scan_id", "change", "old_distance", "new_distance", "old_threshold", "new_threshold", "uri"]
    rows = [[str(c.scan_id), c.change, f"{c.old_positive_distance:.4f}", f"{c.new_positive_distance:.4f}",
             f"{c.old_threshold:.4f}", f"{c.new_threshold:.4f}", c.uri] for c in changes]
    if args.format == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(header)
        writer.writerows(rows)
        sys.stdout.write(buffer.getvalue())
        return 0

    flagged = sum(1 for c in changes if c.change == "newly flagged")
    print(f"{flagged} newly flagged, {len(changes) - flagged} newly cleared "
          f"(old: model {old.model_sha256[:12]} set {old.exemplar_set_id}; new: model {new.model_sha256[:12]} set {new.exemplar_set_id})")
    if rows:
        print(format_rows(header, rows))
    return 0


def _selection(session, reference: str) -> registry.Selection:
    """Read ``set:ID`` as an exemplar set, anything else as a model version with its newest set."""
    if reference.startswith("set:"):
        return registry.selection_for_exemplar_set(session, int(reference[4:]))
    version = registry.find_model_version(session, reference)
    exemplar_set = registry.newest_exemplar_set(session, version.id)
    if exemplar_set is None:
        raise registry.RegistryError(f"model version {version.sha256[:12]} has no exemplar set")
    return registry.Selection(version.id, version.sha256, exemplar_set.id)
