//! The body of a store's error answer, cut at a cap (object_store's connector, `http.rs`, and the
//! AWS SDK's interceptor here). The stores' clients (the AWS SDK,
//! object_store) read an error's body whole into its message: a hostile or broken server
//! answering a 403 of gigabytes must not become the process's memory, nor its log.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

/// The most of an error answer's body kept for its message; the rest is never read.
pub const ERROR_BODY_CAP: usize = 8 * 1024;

/// `inner`, ending once `left` bytes of data went through: what follows is never polled.
pub struct Truncated<B> {
    inner: B,
    left: usize,
}

impl<B> Truncated<B> {
    /// The first `cap` bytes of `inner`.
    pub fn new(inner: B, cap: usize) -> Truncated<B> {
        Truncated { inner, left: cap }
    }
}

impl<B> Body for Truncated<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(mut data) => {
                    data.truncate(self.left);
                    self.left -= data.len();
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
                // Trailers and the like carry no bulk: passed on as they are.
                Err(frame) => Poll::Ready(Some(Ok(frame))),
            },
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0 || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = SizeHint::new();
        hint.set_upper(self.left as u64);
        hint
    }
}

/// Cuts the body of every error answer at [`ERROR_BODY_CAP`] before the SDK reads it whole into
/// its error (the module says why).
#[derive(Debug)]
pub struct CapErrorBodies;

impl aws_sdk_s3::config::Intercept for CapErrorBodies {
    fn name(&self) -> &'static str {
        "CapErrorBodies"
    }

    fn modify_before_deserialization(
        &self,
        context: &mut aws_sdk_s3::config::interceptors::BeforeDeserializationInterceptorContextMut<
            '_,
        >,
        _components: &aws_sdk_s3::config::RuntimeComponents,
        _config: &mut aws_sdk_s3::config::ConfigBag,
    ) -> Result<(), aws_sdk_s3::error::BoxError> {
        let response = context.response_mut();
        if response.status().is_client_error() || response.status().is_server_error() {
            let body = response.take_body();
            *response.body_mut() = aws_sdk_s3::primitives::SdkBody::from_body_1_x(Truncated::new(
                body,
                ERROR_BODY_CAP,
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    #[tokio::test]
    async fn a_body_ends_at_its_cap() {
        let long = Full::new(Bytes::from(vec![b'x'; 100_000]));
        let kept = Truncated::new(long, 8).collect().await.unwrap().to_bytes();
        assert_eq!(&kept[..], b"xxxxxxxx");
        let short = Full::new(Bytes::from_static(b"<Error/>"));
        let kept = Truncated::new(short, ERROR_BODY_CAP)
            .collect()
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(&kept[..], b"<Error/>");
    }
}
