"""Publisher grants at intake: may this broker user act for the request's actor?
(docs/contract.md, "Publisher grants")."""

from __future__ import annotations

from collections.abc import Mapping

from consumer.domain.grants import NOTHING, Grant
from consumer.service_layer.intake import fingerprint
from consumer.service_layer.unit_of_work import AbstractUnitOfWork
from contracts import BatchRequest, BatchStatus


def granted_outright(
    grants: Mapping[str, Grant] | None, request: BatchRequest, user_id: str
) -> bool:
    """Granted without reading anything: no grants are set, or `user_id`'s covers the actor by
    id or covers everyone. Otherwise ask `is_granted`."""
    return grants is None or grants.get(user_id, NOTHING).covers_id(request.actor_id)


async def is_granted(
    uow: AbstractUnitOfWork,
    grants: Mapping[str, Grant] | None,
    request: BatchRequest,
    user_id: str,
) -> bool:
    """Whether `user_id` may publish `request`. Reads the batch and, for a role grant, the
    actor; writes nothing."""
    if granted_outright(grants, request, user_id) or await _authorised_before(uow, request):
        return True
    grant = NOTHING if grants is None else grants.get(user_id, NOTHING)
    return bool(grant.roles) and grant.covers(await uow.marketplace.get_actor(request.actor_id))


async def _authorised_before(uow: AbstractUnitOfWork, request: BatchRequest) -> bool:
    """The same request is already stored, and not as a refusal: the HTTP API stored it
    `pending` before publishing it (its token's user is the actor: grants do not apply), or an
    earlier delivery of it passed this check and started it."""
    stored = await uow.batches.get(request.batch_id)
    return (
        stored is not None
        and stored.state.status is not BatchStatus.REJECTED
        and stored.fingerprint == fingerprint(request)
    )
