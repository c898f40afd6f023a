"""gRPC servicer for IdentityService (mounted by the content process)."""

from __future__ import annotations

import grpc

from services.protos.contentops.identity.v1 import identity_pb2 as pb
from services.protos.contentops.identity.v1 import identity_pb2_grpc as pb_grpc

from ..apiutil import PageTokens, check_text, parse_name, to_timestamp
from ..errors import InvalidArgument, PermissionDenied
from ..grpcserver import ServiceSpec, current_principal
from .domain import Principal, Role
from .store import IdentityStore, TokenInfo

ADMIN = frozenset({Role.ADMIN})
ROLES = {
    "CreateUser": ADMIN,
    # Anyone may read "users/me" (who a token belongs to: the web edge's sign-in); admins any user.
    "GetUser": frozenset(Role),
    "ListUsers": ADMIN,
    "CreateToken": ADMIN,
    "RevokeToken": frozenset(Role),  # anyone may revoke their own token; admins any
}

MAX_REP = 64  # identity_users.rep is VARCHAR(64)
MAX_TEAM = 72  # identity_users.team is VARCHAR(72); team ids are at most 63 characters

_ROLE_TO_PB = {Role.ADMIN: pb.ROLE_ADMIN, Role.EDITOR: pb.ROLE_EDITOR, Role.REP: pb.ROLE_REP, Role.SALES: pb.ROLE_SALES,
               Role.SERVICE: pb.ROLE_SERVICE}
_ROLE_FROM_PB = {v: k for k, v in _ROLE_TO_PB.items()}


def user_to_pb(p: Principal, created=None) -> pb.User:  # type: ignore[no-untyped-def]
    return pb.User(name=p.name, display_name=p.display_name, role=_ROLE_TO_PB[p.role], rep=p.rep,  # type: ignore[arg-type]
                   team=p.team, create_time=to_timestamp(created))


def token_to_pb(t: TokenInfo) -> pb.Token:
    return pb.Token(name=f"users/{t.user_id}/tokens/{t.id}", create_time=to_timestamp(t.create_time),
                    revoke_time=to_timestamp(t.revoke_time))


def parse_token_name(value: str, field: str = "name") -> tuple[str, str]:
    user, sep, token = value.rpartition("/tokens/")
    if not sep:
        raise InvalidArgument(field, "expected 'users/<id>/tokens/<id>'")
    return parse_name(user, "users", field), parse_name(f"tokens/{token}", "tokens", field)


class IdentityServicer(pb_grpc.IdentityServiceServicer):
    def __init__(self, store: IdentityStore, tokens: PageTokens) -> None:
        self.store = store
        self.tokens = tokens

    def CreateUser(self, request: pb.CreateUserRequest, context: grpc.ServicerContext) -> pb.CreateUserResponse:
        u = request.user
        check_text(u.display_name, "user.display_name", min_len=1, max_len=80)
        if not u.display_name.strip():
            raise InvalidArgument("user.display_name", "required")
        if u.role not in _ROLE_FROM_PB:
            raise InvalidArgument("user.role", "required: one of ROLE_ADMIN, ROLE_EDITOR, ROLE_REP, ROLE_SALES, ROLE_SERVICE")
        rep = ""
        if u.rep:
            if u.role != pb.ROLE_REP:
                raise InvalidArgument("user.rep", "only a ROLE_REP user links to a rep")
            rep = f"reps/{parse_name(u.rep, 'reps', 'user.rep')}"
            if len(rep) > MAX_REP:
                raise InvalidArgument("user.rep", f"at most {MAX_REP} characters")
        team = ""
        if u.team:
            if u.role != pb.ROLE_SALES:
                raise InvalidArgument("user.team", "only a ROLE_SALES user manages a team")
            team = f"teams/{parse_name(u.team, 'teams', 'user.team')}"
            if len(team) > MAX_TEAM:
                raise InvalidArgument("user.team", f"at most {MAX_TEAM} characters")
        principal, token, secret = self.store.create_user(u.display_name.strip(), _ROLE_FROM_PB[u.role], rep, team)
        return pb.CreateUserResponse(user=user_to_pb(principal, token.create_time), token=token_to_pb(token),
                                     secret=secret)

    def GetUser(self, request: pb.GetUserRequest, context: grpc.ServicerContext) -> pb.User:
        who = current_principal()
        user_id = who.id if request.name == "users/me" else parse_name(request.name, "users")
        if who.role is not Role.ADMIN and user_id != who.id:
            raise PermissionDenied("only admins may read other users; ask for 'users/me'")
        return user_to_pb(self.store.get_user(user_id), self.store.user_create_time(user_id))

    def ListUsers(self, request: pb.ListUsersRequest, context: grpc.ServicerContext) -> pb.ListUsersResponse:
        users, token = self.tokens.page(request.page_size, request.page_token, {"m": "ListUsers"},
                                        self.store.list_users, lambda u: u[0].id)
        return pb.ListUsersResponse(users=[user_to_pb(p, t) for p, t in users], next_page_token=token)

    def CreateToken(self, request: pb.CreateTokenRequest, context: grpc.ServicerContext) -> pb.CreateTokenResponse:
        user_id = parse_name(request.parent, "users", "parent")
        token, secret = self.store.create_token(user_id)
        return pb.CreateTokenResponse(token=token_to_pb(token), secret=secret)

    def RevokeToken(self, request: pb.RevokeTokenRequest, context: grpc.ServicerContext) -> pb.RevokeTokenResponse:
        user_id, token_id = parse_token_name(request.name)
        who = current_principal()
        if who.role is not Role.ADMIN and who.id != user_id:
            # Do not reveal whether another user's token exists.
            raise PermissionDenied("only admins may revoke other users' tokens")
        return pb.RevokeTokenResponse(token=token_to_pb(self.store.revoke_token(user_id, token_id)))


def identity_spec(store: IdentityStore, tokens: PageTokens) -> ServiceSpec:
    return ServiceSpec(
        add_to_server=pb_grpc.add_IdentityServiceServicer_to_server,
        servicer=IdentityServicer(store, tokens),
        full_name=pb.DESCRIPTOR.services_by_name["IdentityService"].full_name,
        roles=ROLES,
    )
