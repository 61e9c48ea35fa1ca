//! The actor for a refused handshake: one `pusher:error`, then close with its code.

use crate::protocol::error::ErrorCode;
use crate::protocol::frames::error_frame;
use actix::{Actor, ActorContext, StreamHandler};
use actix_web_actors::ws;

/// Reports `code` to the client and closes.
pub struct Rejected {
    /// Why the connection is refused.
    pub code: ErrorCode,
}

impl Actor for Rejected {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        tracing::debug!(code = self.code.code(), "connection refused");
        ctx.text(error_frame(Some(self.code.code()), self.code.message()));
        ctx.close(Some(ws::CloseReason {
            code: ws::CloseCode::Other(self.code.code()),
            description: Some(self.code.message().into()),
        }));
        ctx.stop();
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for Rejected {
    fn handle(&mut self, _: Result<ws::Message, ws::ProtocolError>, _: &mut Self::Context) {}
}
