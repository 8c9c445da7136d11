"""OpenAI-style /v1/files and /v1/vector_stores over HttpBody (Envoy transcodes). A vector store is a collection of
the key's tenant, and its id is its name: the name chat requests give in `"retrieval": {"collections": [...]}`."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import PurePosixPath
from typing import Any

import grpc
from google.api import httpbody_pb2
from google.protobuf import empty_pb2
from sluice.v1 import retrieval_pb2, vector_stores_pb2, vector_stores_pb2_grpc

from services.common.errors import ApiError, invalid
from services.orchestrator.ingestion.files import FileStore, UploadedFile
from services.orchestrator.ingestion.gateway import RetrievalGateway, api_error
from services.orchestrator.ingestion.multipart import MultipartError, parse_form
from services.orchestrator.openai_facade import error_response, request_id_of
from services.orchestrator.pipeline.pipeline import tenant_of
from services.retrieval.collection_names import NAME_RULE, is_valid_name
from services.retrieval.loaders import UnsupportedFile, text_from_bytes

PURPOSES = ("assistants", "user_data", "batch", "fine-tune", "vision", "evals")


def file_not_found(file_id: str, param: str = "file_id") -> ApiError:
    return ApiError(404, f"No such File object: {file_id}", "invalid_request_error", param, "file_not_found")


def vector_store_object(collection: retrieval_pb2.Collection) -> dict[str, Any]:
    documents = int(collection.documents)
    return {"id": collection.name, "object": "vector_store", "name": collection.name,
            "created_at": int(collection.created_at), "last_active_at": int(collection.created_at),
            "usage_bytes": 0, "status": "completed", "expires_after": None, "expires_at": None, "metadata": {},
            "file_counts": {"in_progress": 0, "completed": documents, "failed": 0, "cancelled": 0,
                            "total": documents},
            "chunks": int(collection.chunks)}  # extension: the tenant's chunks in the collection


def _reply(payload: dict[str, Any]) -> httpbody_pb2.HttpBody:
    return httpbody_pb2.HttpBody(content_type="application/json",
                                 data=json.dumps(payload, ensure_ascii=False).encode())


def _json_object(body: httpbody_pb2.HttpBody) -> dict[str, Any]:
    try:
        value = json.loads(body.data or b"{}")
    except ValueError:
        raise invalid("The request body is not valid JSON.", None, "invalid_json") from None
    if not isinstance(value, dict):
        raise invalid("The request body must be a JSON object.", None, "invalid_json")
    return value


class VectorStoresFacade(vector_stores_pb2_grpc.VectorStoresServicer):
    def __init__(self, files: FileStore, gateway: RetrievalGateway) -> None:
        self.files = files
        self.gateway = gateway

    async def _answer(self, context: grpc.aio.ServicerContext, work: Any) -> httpbody_pb2.HttpBody:
        """Runs one handler: its JSON with a 200, or its ApiError in OpenAI's shape."""
        request_id = request_id_of(context)
        try:
            payload = await work
        except ApiError as error:
            return await error_response(context, request_id, error)
        await context.send_initial_metadata((("x-request-id", request_id), ("x-http-status", "200")))
        return _reply(payload)

    async def _collection(self, call: Any, param: str = "vector_store_id") -> Any:
        try:
            return await call
        except grpc.aio.AioRpcError as exc:
            raise api_error(exc, param) from None

    # --- files ----------------------------------------------------------------------------------------------

    async def UploadFile(self, request: httpbody_pb2.HttpBody,
                         context: grpc.aio.ServicerContext) -> httpbody_pb2.HttpBody:
        return await self._answer(context, self._upload(tenant_of(context), request))

    async def _upload(self, tenant: str, request: httpbody_pb2.HttpBody) -> dict[str, Any]:
        try:
            form = parse_form(request.content_type, request.data)
        except MultipartError as exc:
            raise invalid(f"POST /v1/files takes multipart/form-data with 'file' and 'purpose': {exc}.", "file",
                          "invalid_value") from None
        upload = form.get("file")
        if upload is None or not upload.filename:
            raise invalid("Missing required parameter: 'file' (a file part with a filename).", "file",
                          "missing_required_parameter")
        purpose = form["purpose"].data.decode(errors="replace") if "purpose" in form else ""
        if purpose not in PURPOSES:
            raise invalid(f"Invalid 'purpose': expected one of {', '.join(PURPOSES)}.", "purpose", "invalid_value")
        filename = PurePosixPath(upload.filename.replace("\\", "/")).name or "upload.txt"
        try:
            text = text_from_bytes(filename, upload.data)
        except UnsupportedFile as exc:
            raise invalid(str(exc), "file", "unsupported_file") from None
        except Exception:
            raise invalid(f"The file {filename!r} could not be read.", "file", "unreadable_file") from None
        stored = await asyncio.to_thread(self.files.add, tenant, filename, purpose, len(upload.data), text)
        return stored.as_openai()

    async def ListFiles(self, request: empty_pb2.Empty, context: grpc.aio.ServicerContext) -> httpbody_pb2.HttpBody:
        async def work() -> dict[str, Any]:
            found = await asyncio.to_thread(self.files.list, tenant_of(context))
            return {"object": "list", "data": [f.as_openai() for f in found], "has_more": False}

        return await self._answer(context, work())

    async def _file(self, tenant: str, file_id: str, param: str = "file_id") -> UploadedFile:
        found = await asyncio.to_thread(self.files.get, tenant, file_id)
        if found is None:
            raise file_not_found(file_id, param)
        return found

    async def RetrieveFile(self, request: vector_stores_pb2.FileRef,
                           context: grpc.aio.ServicerContext) -> httpbody_pb2.HttpBody:
        async def work() -> dict[str, Any]:
            return (await self._file(tenant_of(context), request.file_id)).as_openai()

        return await self._answer(context, work())

    async def DeleteFile(self, request: vector_stores_pb2.FileRef,
                         context: grpc.aio.ServicerContext) -> httpbody_pb2.HttpBody:
        async def work() -> dict[str, Any]:
            if not await asyncio.to_thread(self.files.delete, tenant_of(context), request.file_id):
                raise file_not_found(request.file_id)
            return {"id": request.file_id, "object": "file", "deleted": True}

        return await self._answer(context, work())

    # --- vector stores ----------------------------------------------------------------------------------------

    async def CreateVectorStore(self, request: httpbody_pb2.HttpBody,
                                context: grpc.aio.ServicerContext) -> httpbody_pb2.HttpBody:
        async def work() -> dict[str, Any]:
            tenant = tenant_of(context)
            body = _json_object(request)
            name = body.get("name")
            if not isinstance(name, str) or not is_valid_name(name):
                raise invalid(f"'name' is required and becomes the vector store's id: {NAME_RULE}.", "name",
                              "invalid_value")
            file_ids = body.get("file_ids") or []
            if not isinstance(file_ids, list) or not all(isinstance(f, str) for f in file_ids):
                raise invalid("'file_ids' must be an array of file ids.", "file_ids", "invalid_type")
            files = [await self._file(tenant, file_id, "file_ids") for file_id in file_ids]
            await self._collection(self.gateway.create(tenant, name), "name")
            if files:
                await self._ingest(tenant, name, files)
            return vector_store_object(await self._collection(self.gateway.get(tenant, name), "name"))

        return await self._answer(context, work())

    async def ListVectorStores(self, request: empty_pb2.Empty,
                               context: grpc.aio.ServicerContext) -> httpbody_pb2.HttpBody:
        async def work() -> dict[str, Any]:
            found = await self._collection(self.gateway.list(tenant_of(context)))
            data = [vector_store_object(c) for c in found]
            return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                    "last_id": data[-1]["id"] if data else None, "has_more": False}

        return await self._answer(context, work())

    async def RetrieveVectorStore(self, request: vector_stores_pb2.VectorStoreRef,
                                  context: grpc.aio.ServicerContext) -> httpbody_pb2.HttpBody:
        async def work() -> dict[str, Any]:
            return vector_store_object(
                await self._collection(self.gateway.get(tenant_of(context), request.vector_store_id)))

        return await self._answer(context, work())

    async def DeleteVectorStore(self, request: vector_stores_pb2.VectorStoreRef,
                                context: grpc.aio.ServicerContext) -> httpbody_pb2.HttpBody:
        async def work() -> dict[str, Any]:
            await self._collection(self.gateway.delete(tenant_of(context), request.vector_store_id))
            return {"id": request.vector_store_id, "object": "vector_store.deleted", "deleted": True}

        return await self._answer(context, work())

    async def CreateVectorStoreFile(self, request: vector_stores_pb2.VectorStoreBody,
                                    context: grpc.aio.ServicerContext) -> httpbody_pb2.HttpBody:
        async def work() -> dict[str, Any]:
            tenant = tenant_of(context)
            body = _json_object(request.body)
            file_id = body.get("file_id")
            if not isinstance(file_id, str) or not file_id:
                raise invalid("Missing required parameter: 'file_id'.", "file_id", "missing_required_parameter")
            found = await self._file(tenant, file_id)
            await self._collection(self.gateway.get(tenant, request.vector_store_id))  # 404 before any work
            summary = await self._ingest(tenant, request.vector_store_id, [found])
            return {"id": found.id, "object": "vector_store.file", "created_at": int(time.time()),
                    "vector_store_id": request.vector_store_id, "usage_bytes": found.bytes, "status": "completed",
                    "last_error": None, "chunking_strategy": {"type": "auto"},
                    "chunks": int(summary.chunks)}  # extension: chunks written (0 when the file was unchanged)

        return await self._answer(context, work())

    async def _ingest(self, tenant: str, collection: str,
                      files: list[UploadedFile]) -> retrieval_pb2.IngestSummary:
        documents = [retrieval_pb2.Document(id=f.filename, text=f.text, collection=collection,
                                            metadata={"source": f.filename, "file_id": f.id,
                                                      "type": PurePosixPath(f.filename).suffix.lower().lstrip(".")})
                     for f in files]
        return await self._collection(self.gateway.ingest(tenant, collection, documents))
