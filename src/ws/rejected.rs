//! The actor for a refused handshake: one `pusher:error`, then close with its code.

use super::context::{CloseCode, CloseReason, Message, ProtocolError, WsContext};
use crate::protocol::error::ErrorCode;
use crate::protocol::frames::error_frame;
use actix::{Actor, ActorContext, StreamHandler};

/// Reports `code` to the client and closes.
pub struct Rejected {
    /// Why the connection is refused.
    pub code: ErrorCode,
}

impl Actor for Rejected {
    type Context = WsContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        tracing::debug!(code = self.code.code(), "connection refused");
        ctx.text(error_frame(Some(self.code.code()), self.code.message()));
        ctx.close(Some(CloseReason {
            code: CloseCode::Other(self.code.code()),
            description: Some(self.code.message().into()),
        }));
        ctx.stop();
    }
}

impl StreamHandler<Result<Message, ProtocolError>> for Rejected {
    fn handle(&mut self, _: Result<Message, ProtocolError>, _: &mut Self::Context) {}
}
