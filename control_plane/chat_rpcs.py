"""FinetuneService's chat methods (a mixin of control_plane.finetune_service.FinetuneService): a succeeded task's
model (or an export's) answers on an agent's chat session (control_plane.chat_sessions), relayed event by event."""

from __future__ import annotations

import grpc

from control_plane.chat_sessions import ChatSessions, NoFreeDevice, OpenFailed, chat_subject
from control_plane.db_calls import in_db_thread
from control_plane.grpc_errors import abort
from protos import agent_pb2, control_plane_pb2
from protos.chat_input import ChatInputError, parse_chat_input


class ChatRpcs:
    _chat: ChatSessions

    async def Chat(self, request, context):
        try:
            asked = parse_chat_input({"question": request.question, "passages": list(request.passages),
                                      "model": request.model or "tuned",
                                      **({"max_new_tokens": request.max_new_tokens} if request.max_new_tokens else {})})
        except ChatInputError as exc:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, exc.message, exc.field)
        task = await self._task_or_404(request.task_id, context)
        try:
            subject = await in_db_thread(chat_subject, self._store, task)
        except OpenFailed as exc:
            await abort(context, exc.code, exc.message, "task_id")
        turn = agent_pb2.AgentChatTurnRequest(question=asked.question, passages=asked.passages, model=asked.model,
                                              max_new_tokens=asked.max_new_tokens)
        for last_try in (False, True):  # a session its agent closed meanwhile (idle, restarted) is opened again
            try:
                session = await self._chat.session_for(subject)
            except NoFreeDevice as exc:
                await abort(context, grpc.StatusCode.UNAVAILABLE, str(exc), "task_id")
            except OpenFailed as exc:
                await abort(context, exc.code, exc.message, "task_id")
            turn.session_id = session.session_id
            self._chat.begin(session)
            call = self._clients.stub(session.address).ChatTurn(turn)
            sent = False
            try:
                async for event in call:
                    sent = True
                    yield event
                return
            except grpc.aio.AioRpcError as exc:
                if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE):
                    self._chat.drop(session)
                    if not sent and not last_try:
                        continue
                code = exc.code() if exc.code() != grpc.StatusCode.NOT_FOUND else grpc.StatusCode.UNAVAILABLE
                await abort(context, code, f"chat with task {task.id} on agent {session.agent_id}: {exc.details()}")
            finally:
                call.cancel()
                self._chat.end(session)

    async def CloseChat(self, request, context):
        task = await self._task_or_404(request.task_id, context)
        return control_plane_pb2.CloseChatResponse(closed=await self._chat.close(task.id))
