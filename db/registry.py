"""The model registry: model versions, exemplar sets, and which pair the workers use."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.schema import ActiveConfiguration, ExemplarSet, ModelVersion, Result, utcnow

_ACTIVE_ROW_ID = 1


class RegistryError(Exception):
    """A model version or exemplar set that is unknown, ambiguous or inconsistent."""


@dataclass(frozen=True)
class Selection:
    """A model version and one of its exemplar sets."""

    model_version_id: int
    model_sha256: str
    exemplar_set_id: int


def find_model_version(session: Session, reference: str) -> ModelVersion:
    """Find a model version by id, full sha256 or a unique sha256 prefix of at least 6 characters."""
    if reference.isdigit() and len(reference) < 6:
        version = session.get(ModelVersion, int(reference))
        if version is None:
            raise RegistryError(f"model version {reference} not found; see 'cargoscan models list'")
        return version

    if len(reference) < 6:
        raise RegistryError(f"model reference {reference!r} is too short; give an id or at least 6 hex digits of the sha256")
    matches = session.execute(select(ModelVersion).where(ModelVersion.sha256.startswith(reference.lower()))).scalars().all()
    if not matches:
        raise RegistryError(f"no model version with sha256 starting {reference!r}; see 'cargoscan models list'")
    if len(matches) > 1:
        raise RegistryError(f"sha256 prefix {reference!r} matches {len(matches)} model versions; give more digits")
    return matches[0]


def newest_exemplar_set(session: Session, model_version_id: int | None = None) -> ExemplarSet | None:
    statement = select(ExemplarSet).order_by(ExemplarSet.id.desc()).limit(1)
    if model_version_id is not None:
        statement = statement.where(ExemplarSet.model_version_id == model_version_id)
    return session.execute(statement).scalar_one_or_none()


def activate(session: Session, model_version_id: int, exemplar_set_id: int | None = None) -> Selection:
    """Make a model version and one of its exemplar sets (the newest by default) the active pair."""
    version = session.get(ModelVersion, model_version_id)
    if version is None:
        raise RegistryError(f"model version {model_version_id} not found")

    if exemplar_set_id is None:
        exemplar_set = newest_exemplar_set(session, model_version_id)
        if exemplar_set is None:
            raise RegistryError(f"model version {version.sha256[:12]} has no exemplar set; run 'cargoscan enroll' with it first")
    else:
        exemplar_set = session.get(ExemplarSet, exemplar_set_id)
        if exemplar_set is None:
            raise RegistryError(f"exemplar set {exemplar_set_id} not found")
        if exemplar_set.model_version_id != model_version_id:
            raise RegistryError(
                f"exemplar set {exemplar_set_id} was made by another model version; an exemplar set is only valid "
                "with the model that embedded it"
            )

    row = session.get(ActiveConfiguration, _ACTIVE_ROW_ID)
    if row is None:
        session.add(ActiveConfiguration(id=_ACTIVE_ROW_ID, model_version_id=version.id, exemplar_set_id=exemplar_set.id, activated_at=utcnow()))
    else:
        row.model_version_id, row.exemplar_set_id, row.activated_at = version.id, exemplar_set.id, utcnow()
    session.flush()
    return Selection(version.id, version.sha256, exemplar_set.id)


def active_selection(session: Session) -> Selection | None:
    """Return the activated pair, or else the newest exemplar set with its model; None when there is none."""
    row = session.get(ActiveConfiguration, _ACTIVE_ROW_ID)
    if row is not None:
        version = session.get(ModelVersion, row.model_version_id)
        return Selection(version.id, version.sha256, row.exemplar_set_id)

    exemplar_set = newest_exemplar_set(session)
    if exemplar_set is None:
        return None
    version = session.get(ModelVersion, exemplar_set.model_version_id)
    return Selection(version.id, version.sha256, exemplar_set.id)


def selection_for_exemplar_set(session: Session, exemplar_set_id: int) -> Selection:
    exemplar_set = session.get(ExemplarSet, exemplar_set_id)
    if exemplar_set is None:
        raise RegistryError(f"exemplar set {exemplar_set_id} not found; see 'cargoscan models list'")
    version = session.get(ModelVersion, exemplar_set.model_version_id)
    return Selection(version.id, version.sha256, exemplar_set.id)


@dataclass(frozen=True)
class VersionSummary:
    id: int
    sha256: str
    name: str
    threshold: float
    created_at: object
    exemplar_sets: list[tuple[int, str, int, int]]
    results: int
    active_exemplar_set_id: int | None


def list_versions(session: Session) -> list[VersionSummary]:
    """Summarise every model version with its exemplar sets and result counts, newest first."""
    active = session.get(ActiveConfiguration, _ACTIVE_ROW_ID)
    counts = dict(session.execute(select(Result.model_version_id, func.count()).group_by(Result.model_version_id)).tuples().all())
    summaries = []
    for version in session.execute(select(ModelVersion).order_by(ModelVersion.id.desc())).scalars():
        sets = session.execute(
            select(ExemplarSet.id, ExemplarSet.name, ExemplarSet.positive_count, ExemplarSet.negative_count)
            .where(ExemplarSet.model_version_id == version.id)
            .order_by(ExemplarSet.id)
        ).tuples().all()
        summaries.append(
            VersionSummary(
                id=version.id, sha256=version.sha256, name=version.name, threshold=version.threshold,
                created_at=version.created_at, exemplar_sets=list(sets), results=counts.get(version.id, 0),
                active_exemplar_set_id=active.exemplar_set_id if active and active.model_version_id == version.id else None,
            )
        )
    return summaries
