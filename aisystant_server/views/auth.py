from pyramid.security import NO_PERMISSION_REQUIRED

from aisystant_server import present
from aisystant_server.errors import InvalidCredentials
from aisystant_server.i18n import Msg
from aisystant_server.permissions import Permission
from aisystant_server.ratelimit import login_throttle
from aisystant_server.schemas.auth import LoginSchema, RegisterSchema
from aisystant_server.security import revoke
from aisystant_server.services import accounts
from aisystant_server.validation import validate_json
from aisystant_server.views import api_view, ok


@api_view(route_name="auth.register", request_method="POST", permission=NO_PERMISSION_REQUIRED)
def register(request):
    data = validate_json(RegisterSchema(), request)
    user = accounts.register(request.db, **data)
    token = request.registry["tokens"].issue(user)
    return ok(request, {"user": present.user(user), "token": token}, Msg("registered"), status=201)


@api_view(route_name="auth.login", request_method="POST", permission=NO_PERMISSION_REQUIRED)
def login(request):
    data = validate_json(LoginSchema(), request)
    user = login_throttle(request, data["email"]).check(lambda: accounts.authenticate(
        request.registry["db.autocommit_session_factory"], data["email"], data["password"]))
    if user is None:
        raise InvalidCredentials()
    token = request.registry["tokens"].issue(user)
    return ok(request, {"user": present.user(user), "token": token}, Msg("logged_in"))


@api_view(route_name="auth.me", request_method="GET", permission=Permission.ACCOUNT_READ)
def me(request):
    return ok(request, present.profile(request.identity))


@api_view(route_name="auth.logout", request_method="POST", permission=Permission.ACCOUNT_READ)
def logout(request):
    revoke(request, request.jwt_claims)
    return ok(request, message=Msg("logged_out"))
