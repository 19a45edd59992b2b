use datafusion::error::DataFusionError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a refusal from the cluster means, so that the node can answer the right status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Unauthenticated,
    PermissionDenied,
    NotFound,
    InvalidArgument,
    Unavailable,
    /// A statement over its memory limit.
    ResourceExhausted,
    Internal,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The statement does not parse, names what does not exist, or is not a query.
    #[error("{0}")]
    Sql(String),
    /// The cluster refused or failed a scan.
    #[error("{message}")]
    Source { code: Code, message: String },
}

impl Error {
    pub fn code(&self) -> Code {
        match self {
            Error::Sql(_) => Code::InvalidArgument,
            Error::Source { code, .. } => *code,
        }
    }

    pub fn source_error(code: Code, message: impl Into<String>) -> Error {
        Error::Source {
            code,
            message: message.into(),
        }
    }
}

impl From<DataFusionError> for Error {
    /// A scan's refusal travels through DataFusion wrapped: find it, so the caller hears the
    /// node's words and code, not "External error: ...".
    fn from(e: DataFusionError) -> Error {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(c) = cause {
            if let Some(ours) = c.downcast_ref::<Error>() {
                return ours.clone();
            }
            cause = c.source();
        }
        match e {
            DataFusionError::ResourcesExhausted(m) => Error::source_error(
                Code::ResourceExhausted,
                format!("the statement needs more memory than a statement may use: {m}"),
            ),
            DataFusionError::Internal(m) => Error::source_error(Code::Internal, m),
            other => Error::Sql(other.strip_backtrace().to_string()),
        }
    }
}

impl From<Error> for DataFusionError {
    fn from(e: Error) -> DataFusionError {
        DataFusionError::External(Box::new(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_wrapped_by_datafusion_keeps_its_code_and_words() {
        let refused = Error::source_error(Code::PermissionDenied, "no extracts at this tier");
        let wrapped = DataFusionError::Context(
            "scan".into(),
            Box::new(DataFusionError::from(refused.clone())),
        );
        let back = Error::from(wrapped);
        assert_eq!(back.code(), Code::PermissionDenied);
        assert_eq!(back.to_string(), "no extracts at this tier");
    }
}
