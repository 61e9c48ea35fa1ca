//! What a failed Redis command means for the node: an outage (Redis is gone,
//! restarting or failing over, so it may have lost or reaped this node's
//! share) or a refusal (Redis is there and answered this one command with an
//! error). Only an outage switches the node to serving its own clients and
//! re-announcing its share later; a refusal fails that one operation.
//!
//! Also the one guard against empty commands: a pipeline with nothing in it
//! is answered here with an empty reply instead of being sent, since the
//! client library refuses to send it ("empty command").

use super::connection::Connection;
use redis::{ErrorKind, FromRedisValue, RedisError, RedisResult, ServerErrorKind, Value};

/// Whether `error` means Redis is unreachable or not serving as the primary
/// it was: I/O errors and dropped connections, and the server replies that
/// say it is loading its data set, read-only (a failover), or its master or
/// cluster is down. Any other reply (a wrong type, a script error, an ACL
/// refusal, a command the client would not send) is a refusal.
pub fn is_outage(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_timeout()
        || error.is_unrecoverable_error()
        || matches!(
            error.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::ReadOnly
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::ClusterDown
            )
        )
}

/// Runs `pipe`, or answers an empty one with an empty reply (no commands, no
/// round trip): a caller that built it from an empty list gets an empty result.
///
/// Errors: those of the pipeline, and a type error if `T` cannot be read from
/// an empty array.
pub async fn query_pipeline<T: FromRedisValue>(
    pipe: &redis::Pipeline,
    connection: &mut Connection,
) -> RedisResult<T> {
    if pipe.is_empty() {
        return Ok(T::from_redis_value(Value::Array(Vec::new()))?);
    }
    pipe.query_async(connection).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_connections_and_failovers_are_outages() {
        let io = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(is_outage(&io));
        assert!(is_outage(&RedisError::from((
            ErrorKind::Server(ServerErrorKind::BusyLoading),
            "loading"
        ))));
        assert!(is_outage(&RedisError::from((
            ErrorKind::Server(ServerErrorKind::ReadOnly),
            "read-only replica"
        ))));
    }

    #[test]
    fn refused_commands_are_not_outages() {
        for error in [
            RedisError::from((ErrorKind::Client, "empty command")),
            RedisError::from((
                ErrorKind::Server(ServerErrorKind::ResponseError),
                "WRONGTYPE",
            )),
            RedisError::from((ErrorKind::UnexpectedReturnType, "not an integer")),
            RedisError::from((ErrorKind::Server(ServerErrorKind::NoPerm), "acl")),
        ] {
            assert!(!is_outage(&error), "{error}");
        }
    }

    #[test]
    fn an_empty_reply_reads_as_empty_results() {
        let lists = Vec::<Vec<String>>::from_redis_value(Value::Array(Vec::new()));
        assert_eq!(lists.ok(), Some(Vec::new()));
        assert!(<()>::from_redis_value(Value::Array(Vec::new())).is_ok());
    }
}
