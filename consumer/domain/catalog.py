"""Rules of professional_approval, service_update, user_update and bulk_delete
(docs/contract.md, Domain rules)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar

from pydantic import Field, StrictBool

from consumer.domain.access import require_active
from consumer.domain.errors import PermissionDenied
from consumer.domain.fields import Changes, Money, Text
from consumer.domain.model import Actor, Professional, ResourceKind, Role, Service, User

Name = Annotated[Text, Field(min_length=1, max_length=200)]
Email = Annotated[Text, Field(max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]
Phone = Annotated[Text, Field(max_length=40, pattern=r"^[0-9+()\- .]*$")]


class ApprovalDecision(Changes):
    approved: StrictBool
    verified: StrictBool | None = None
    reason: Annotated[Text, Field(max_length=2000)] | None = None

    nullable: ClassVar[frozenset[str]] = frozenset({"reason"})


class ServiceChanges(Changes):
    name: Name | None = None
    description: Annotated[Text, Field(max_length=5000)] | None = None
    price: Money | None = None
    category: Annotated[Text, Field(min_length=1, max_length=100)] | None = None
    is_active: StrictBool | None = None


class UserChanges(Changes):
    name: Name | None = None
    email: Email | None = None
    phone: Phone | None = None
    is_active: StrictBool | None = None
    role: Role | None = None

    nullable: ClassVar[frozenset[str]] = frozenset({"phone"})


class DeleteTarget(Changes):
    resource: ResourceKind


def require_back_office(actor: Actor, what: str) -> None:
    if not actor.is_back_office:
        raise PermissionDenied(f"only admin or staff may {what}")


def require_admin(actor: Actor, what: str) -> None:
    require_active(actor)
    if actor.role is not Role.ADMIN:
        raise PermissionDenied(f"only an admin may {what}")


def decide_approval(
    actor: Actor, professional: Professional, decision: ApprovalDecision, now: datetime
) -> Professional:
    """Record the decision and who made it, when (admin/staff only)."""
    require_back_office(actor, "approve professionals")
    professional.approved = decision.approved
    if decision.verified is not None:
        professional.verified = decision.verified
    professional.approval_reason = decision.reason
    professional.approved_by = actor.id
    professional.approved_at = now
    return professional


def update_service(actor: Actor, service: Service, changes: ServiceChanges) -> Service:
    """The service's own professional, or admin/staff, may change any field."""
    require_active(actor)
    owner = actor.id == service.professional_user_id
    if not (actor.is_back_office or owner):
        raise PermissionDenied(
            "only the service's professional or admin/staff (while active) may change it"
        )
    for name in changes.model_fields_set:
        setattr(service, name, getattr(changes, name))
    return service


SELF_EDITABLE = frozenset({"name", "email", "phone"})


def authorize_user_update(actor: Actor, target: User, changes: UserChanges) -> None:
    fields = changes.model_fields_set
    require_active(actor)
    if actor.role is Role.ADMIN:
        return
    if "role" in fields:
        raise PermissionDenied("only an admin may change a user's role")
    if actor.role is Role.STAFF:
        if "is_active" in fields and target.role is Role.ADMIN:
            raise PermissionDenied("staff may not activate or deactivate an admin")
        return
    if actor.id != target.id:
        raise PermissionDenied("users may only change their own profile")
    if not fields <= SELF_EDITABLE:
        forbidden = ", ".join(sorted(fields - SELF_EDITABLE))
        raise PermissionDenied(f"users may not change their own {forbidden}")


def update_user(actor: Actor, target: User, changes: UserChanges) -> User:
    """Users edit their name/email/phone; staff also is_active of non-admins; admin anything."""
    authorize_user_update(actor, target, changes)
    for name in changes.model_fields_set:
        setattr(target, name, getattr(changes, name))
    return target
