"""A fake Docker Engine API on loopback: `prefect deploy` runs prefect.yaml's real build and push.

There is no Docker engine here, and prefect.yaml must not grow a test-only switch. docker-py
(under prefect-docker's steps) talks to whatever `DOCKER_HOST` names, so the deploy test points
it at this server. It answers the five calls the steps make: `GET /version`, `POST /build`
(keeps the build context tar and its query), `GET /images/{id}/json`, `POST /images/{id}/tag`
and `POST /images/{name}/push` (refused unless that name:tag was tagged).

Responses are single JSON objects rather than chunked streams; docker-py reads a non-chunked
stream response as one event, which is all prefect-docker's loops need.
"""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
import threading
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import unquote

from standins.loopback import LoopbackServer, Request, Response

API_VERSION: Final[str] = "1.45"
_VERSIONED = re.compile(r"^/v\d+\.\d+(?P<rest>/.*)$")
_IMAGE_JSON = re.compile(r"^/images/(?P<name>.+)/json$")
_IMAGE_TAG = re.compile(r"^/images/(?P<name>.+)/tag$")
_IMAGE_PUSH = re.compile(r"^/images/(?P<name>.+)/push$")


@dataclass
class Build:
    """One `POST /build`: its query parameters and the files of its context."""

    query: dict[str, str]
    files: dict[str, bytes]
    image_id: str


@dataclass
class _State:
    builds: list[Build] = field(default_factory=list)
    images: dict[str, set[str]] = field(default_factory=dict)  # id -> {"repo:tag"}
    pushes: list[str] = field(default_factory=list)  # "repo:tag"


class FakeDockerEngine(LoopbackServer):
    """Records builds, tags and pushes; `docker_host` is the value for `DOCKER_HOST`."""

    def __init__(self) -> None:
        self._state = _State()
        self._state_lock = threading.Lock()
        super().__init__()

    @property
    def docker_host(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    @property
    def builds(self) -> list[Build]:
        with self._state_lock:
            return list(self._state.builds)

    @property
    def pushes(self) -> list[str]:
        with self._state_lock:
            return list(self._state.pushes)

    def reset(self) -> None:
        super().reset()
        with self._state_lock:
            self._state = _State()

    def handle(self, request: Request) -> Response:
        path = request.path
        if path in ("/version", "/_ping"):
            return self._version()
        match = _VERSIONED.match(path)
        rest = match.group("rest") if match else path
        if request.method == "GET" and rest == "/version":
            return self._version()
        if request.method == "POST" and rest == "/build":
            return self._build(request)
        if request.method == "GET" and (m := _IMAGE_JSON.match(rest)):
            return self._inspect(unquote(m.group("name")))
        if request.method == "POST" and (m := _IMAGE_TAG.match(rest)):
            return self._tag(unquote(m.group("name")), request)
        if request.method == "POST" and (m := _IMAGE_PUSH.match(rest)):
            return self._push(unquote(m.group("name")), request)
        return Response.json({"message": f"fake docker: no route {request.method} {path}"}, 404)

    def _version(self) -> Response:
        return Response.json(
            {"ApiVersion": API_VERSION, "MinAPIVersion": "1.24", "Version": "fake", "Os": "linux"}
        )

    def _build(self, request: Request) -> Response:
        files: dict[str, bytes] = {}
        with tarfile.open(fileobj=io.BytesIO(request.body), mode="r:*") as tar:
            for member in tar.getmembers():
                if member.isfile():
                    extracted = tar.extractfile(member)
                    files[member.name] = extracted.read() if extracted else b""
        dockerfile = request.arg("dockerfile", "Dockerfile") or "Dockerfile"
        if dockerfile not in files:
            return Response.json({"error": f"Cannot locate specified Dockerfile: {dockerfile}"})
        image_id = "sha256:" + hashlib.sha256(request.body).hexdigest()
        query = {k: v[0] for k, v in request.query.items()}
        with self._state_lock:
            self._state.builds.append(Build(query=query, files=files, image_id=image_id))
            self._state.images.setdefault(image_id, set())
        return Response.json({"aux": {"ID": image_id}})

    def _inspect(self, name: str) -> Response:
        with self._state_lock:
            tags = self._state.images.get(name)
        if tags is None:
            return Response.json({"message": f"No such image: {name}"}, 404)
        return Response.json({"Id": name, "RepoTags": sorted(tags)})

    def _tag(self, name: str, request: Request) -> Response:
        reference = f"{request.arg('repo')}:{request.arg('tag') or 'latest'}"
        with self._state_lock:
            if name not in self._state.images:
                return Response.json({"message": f"No such image: {name}"}, 404)
            self._state.images[name].add(reference)
        return Response(201)

    def _push(self, name: str, request: Request) -> Response:
        reference = f"{name}:{request.arg('tag') or 'latest'}"
        with self._state_lock:
            known = any(reference in tags for tags in self._state.images.values())
            if known:
                self._state.pushes.append(reference)
        if not known:
            return Response.json({"error": f"An image does not exist locally with the tag: {name}"})
        return Response.json({"status": f"pushed {reference}"})
