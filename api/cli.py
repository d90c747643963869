"""``dustpatrol serve``, ``dustpatrol users create`` and ``dustpatrol sites import``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from sqlalchemy import select

from api import principals
from api.db import make_engine, session_factory
from api.errors import ApiError
from api.migrate import upgrade
from api.models.users import Role, User, UserCreate
from api.routes.users import add_user
from api.services.sites import import_registry
from dustpatrol.logs import configure_logging, uvicorn_log_config
from dustpatrol.settings import Settings

users_app = typer.Typer(help="Users of the notice service.", no_args_is_help=True)


def _settings(ctx: typer.Context) -> Settings:
    state = ctx.find_root().obj
    settings = getattr(state, "settings", None)
    if not isinstance(settings, Settings):
        raise ApiError("settings are not loaded")
    return settings


def ensure_admin(settings: Settings) -> str:
    """Create the first admin from settings when the user table is empty; say what happened."""
    sessions = session_factory(make_engine(settings.database.url))
    with sessions() as session:
        if session.scalar(select(User).limit(1)) is not None:
            return "users exist"
        password = settings.server.admin_password
        if password is None:
            return (
                "no users yet: set server.admin_password (DUSTPATROL_SERVER__ADMIN_PASSWORD) "
                "or run `dustpatrol users create NAME --role admin`"
            )
        add_user(
            session,
            UserCreate(
                username=settings.server.admin_username,
                password=password.get_secret_value(),
                role=Role.ADMIN,
            ),
        )
        return f"created admin user {settings.server.admin_username!r}"


def serve_command(
    ctx: typer.Context,
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (default from settings).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default from settings).")] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1, max=64, help="Server processes (default server.workers; one per core)."
        ),
    ] = None,
) -> None:
    """Run the notice service: migrations first, then HTTP (OpenAPI docs at /docs)."""
    import os

    import uvicorn

    from api.app import create_app
    from dustpatrol.settings import CONFIG_FILE_ENV

    settings = _settings(ctx)
    upgrade(settings.database.url)
    typer.echo(ensure_admin(settings))
    processes = workers or settings.server.workers
    options = {
        "host": host or settings.server.host,
        "port": port or settings.server.port,
        "log_config": uvicorn_log_config(settings.log),
        "access_log": settings.server.access_log,
    }
    if processes == 1:
        uvicorn.run(create_app(settings, migrate=False), **options)  # type: ignore[arg-type]
        return
    # Each process builds the app itself from the same config file and environment.
    config_file = getattr(ctx.find_root().obj, "config_file", None)
    if config_file is not None:
        os.environ[CONFIG_FILE_ENV] = str(Path(config_file).resolve())
    # A worker busy importing on a loaded machine answers the supervisor's ping late: give it
    # 30 s (not 5) before it is taken for hung and killed.
    uvicorn.run(
        "api.asgi:create",
        factory=True,
        workers=processes,
        timeout_worker_healthcheck=30,
        **options,  # type: ignore[arg-type]
    )


def worker_command(
    ctx: typer.Context,
    queues: Annotated[
        str,
        typer.Option(
            help="Queues to take work from, comma-separated: frames (metadata, detection), "
            "notices (findings and notices), webhooks, housekeeping (deadlines)."
        ),
    ] = "frames,notices,webhooks,housekeeping",
    concurrency: Annotated[
        int, typer.Option(min=1, max=64, help="Jobs at once (1: in this process).")
    ] = 1,
    name: Annotated[
        str | None, typer.Option(help="Worker name in logs and jobs (default host:pid).")
    ] = None,
) -> None:
    """Run a Celery worker for the service's background work (needs queue.url, a Redis
    broker, and the same database and storage settings as the service)."""
    from api.migrate import pending
    from api.queue import Worker

    settings = _settings(ctx)
    configure_logging(settings.log)
    missing = pending(settings.database.url)
    if missing is not None:
        raise ApiError(
            f"the database is not at schema revision {missing}: start `dustpatrol serve` once "
            "(it migrates) before its workers"
        )
    try:
        worker = Worker(settings, [q.strip() for q in queues.split(",") if q.strip()], name)
    except ValueError as exc:
        raise ApiError(str(exc)) from None
    worker.run(concurrency)


@users_app.command("create")
def create_user_command(
    ctx: typer.Context,
    username: Annotated[str, typer.Argument(help="Login name.")],
    role: Annotated[Role, typer.Option(help="admin, analyst, inspector or bureau.")],
    bureau_id: Annotated[int | None, typer.Option(help="The bureau of a bureau user.")] = None,
    password_stdin: Annotated[
        bool, typer.Option(help="Read the password from standard input.")
    ] = False,
) -> None:
    """Create a user (the password is asked for, or read from stdin)."""
    settings = _settings(ctx)
    upgrade(settings.database.url)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    try:
        body = UserCreate(username=username, password=password, role=role, bureau_id=bureau_id)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'user'}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise ApiError(problems) from None
    with session_factory(make_engine(settings.database.url))() as session:
        user = add_user(session, body)
    typer.echo(f"created user {user.username!r} ({user.role}, id {user.id})")


def _set_active(ctx: typer.Context, username: str, active: bool, reason: str | None) -> None:
    from api.services.accounts import find_user, set_active

    settings = _settings(ctx)
    upgrade(settings.database.url)
    with session_factory(make_engine(settings.database.url))() as session:
        user = set_active(session, None, find_user(session, username=username).id, active, reason)
    principals.changed(settings.paths.data_dir)  # servers on this machine forget at once
    typer.echo(f"user {user.username!r} is {'enabled' if user.active else 'disabled'}")


@users_app.command("disable")
def disable_user_command(
    ctx: typer.Context,
    username: Annotated[str, typer.Argument(help="Login name.")],
    reason: Annotated[str | None, typer.Option(help="Why, for the audit log.")] = None,
) -> None:
    """Disable a user: their logins, tokens and API keys are refused at once (audited)."""
    _set_active(ctx, username, False, reason)


@users_app.command("enable")
def enable_user_command(
    ctx: typer.Context,
    username: Annotated[str, typer.Argument(help="Login name.")],
    reason: Annotated[str | None, typer.Option(help="Why, for the audit log.")] = None,
) -> None:
    """Enable a disabled user again (audited)."""
    _set_active(ctx, username, True, reason)


@users_app.command("keys")
def list_keys_command(
    ctx: typer.Context, username: Annotated[str, typer.Argument(help="Login name.")]
) -> None:
    """List a user's API keys (id, label, prefix, created, revoked)."""
    from sqlalchemy import select

    from api.models.users import ApiKey
    from api.services.accounts import find_user

    settings = _settings(ctx)
    upgrade(settings.database.url)
    with session_factory(make_engine(settings.database.url))() as session:
        user = find_user(session, username=username)
        keys = list(session.scalars(select(ApiKey).where(ApiKey.user_id == user.id)))
        for key in keys:
            revoked = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
            typer.echo(
                f"{key.id}\t{key.prefix}…\t{key.label}\t{key.created_at:%Y-%m-%d}\t{revoked}"
            )
        if not keys:
            typer.echo(f"{username!r} has no API keys")


@users_app.command("revoke-key")
def revoke_key_command(
    ctx: typer.Context,
    username: Annotated[str, typer.Argument(help="Login name of the key's owner.")],
    key_id: Annotated[int, typer.Argument(help="The key's id (see `users keys NAME`).")],
) -> None:
    """Revoke an API key: refused from now on (audited)."""
    from api.services.accounts import find_user, revoke_key

    settings = _settings(ctx)
    upgrade(settings.database.url)
    with session_factory(make_engine(settings.database.url))() as session:
        key = revoke_key(session, None, find_user(session, username=username).id, key_id)
    principals.changed(settings.paths.data_dir)
    typer.echo(f"API key {key.id} ({key.label}) of {username!r} is revoked")


def import_sites_command(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="Registry file (any format `sites check` reads).")],
    crs: Annotated[
        str | None, typer.Option(help="EPSG:xxxx or gcj02 when the file has no CRS.")
    ] = None,
    encoding: Annotated[str | None, typer.Option(help="Attribute encoding, e.g. gbk.")] = None,
    id_field: Annotated[str | None, typer.Option(help="Attribute holding the site id.")] = None,
) -> None:
    """Import (or update) the sites of a registry file into the service's database."""
    settings = _settings(ctx)
    upgrade(settings.database.url)
    if not file.is_file():
        raise ApiError(f"{file} does not exist")
    with session_factory(make_engine(settings.database.url))() as session:
        report = import_registry(
            session, file.read_bytes(), file.name, crs=crs, encoding=encoding, id_field=id_field
        )
    typer.echo(f"{file}: {report.created} created, {report.updated} updated; {report.crs_note}")
    for issue in report.repaired:
        typer.echo(f"repaired {issue.feature}: {issue.problem}")
    for move in report.reassigned:
        typer.echo(
            f"moved {move.site}: {move.from_bureau or 'no bureau'} -> "
            f"{move.to_bureau or 'no bureau'} (its notices stay with the bureau that got them)"
        )
    for issue in report.rejected:
        typer.echo(f"REJECTED {issue.feature}: {issue.problem}")
    if report.rejected:
        raise ApiError(f"{len(report.rejected)} feature(s) rejected; the others were imported")
