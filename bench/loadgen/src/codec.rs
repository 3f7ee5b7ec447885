//! A lean gRPC codec for the hot loop: requests are encoded once per key at startup and sent as
//! shared `Bytes` (a reference-count bump per call, no protobuf encoding), with an optional
//! `report_id` appended from a stack buffer. Protobuf allows a field to follow the others, so
//! `prefix ++ field 5` is a valid `ReportResultRequest`. Responses are decoded with prost, so the
//! run can check what the server answered.

use std::io::Write as _;
use std::marker::PhantomData;

use prost::bytes::{BufMut, Bytes};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// `ReportResultRequest.report_id` is field 5, length-delimited.
const REPORT_ID_TAG: u8 = (5 << 3) | 2;
/// Longest report id this codec writes (one length byte).
const REPORT_ID_MAX: usize = 64;

/// A report id formatted on the stack: `<run nonce>-<worker>-<sequence>`, unique per run.
#[derive(Clone, Copy)]
pub struct ReportId {
    bytes: [u8; REPORT_ID_MAX],
    len: u8,
}

impl ReportId {
    pub fn new(nonce: u64, worker: usize, seq: u64) -> Self {
        let mut bytes = [0u8; REPORT_ID_MAX];
        let mut cursor = &mut bytes[..];
        // 16 + 1 + 20 + 1 + 20 bytes at most: always fits.
        let _ = write!(cursor, "{nonce:x}-{worker}-{seq}");
        let len = REPORT_ID_MAX - cursor.len();
        ReportId { bytes, len: len as u8 }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// One request: the pre-encoded message, plus a report id to append.
pub struct Outgoing {
    pub body: Bytes,
    pub report_id: Option<ReportId>,
}

pub struct RawEncoder;

impl Encoder for RawEncoder {
    type Item = Outgoing;
    type Error = Status;

    fn encode(&mut self, item: Outgoing, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item.body);
        if let Some(id) = item.report_id {
            let id = id.as_bytes();
            dst.put_u8(REPORT_ID_TAG);
            dst.put_u8(id.len() as u8);
            dst.put_slice(id);
        }
        Ok(())
    }
}

pub struct ProstDecoder<M>(PhantomData<M>);

impl<M: prost::Message + Default> Decoder for ProstDecoder<M> {
    type Item = M;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<M>, Status> {
        M::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(format!("cannot decode the response: {e}")))
    }
}

/// Sends pre-encoded requests, decodes responses of type `M`.
pub struct RawCodec<M>(PhantomData<M>);

impl<M> Default for RawCodec<M> {
    fn default() -> Self {
        RawCodec(PhantomData)
    }
}

impl<M: prost::Message + Default + Send + 'static> Codec for RawCodec<M> {
    type Encode = Outgoing;
    type Decode = M;
    type Encoder = RawEncoder;
    type Decoder = ProstDecoder<M>;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> ProstDecoder<M> {
        ProstDecoder(PhantomData)
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use sessionkeeper::proto;

    use super::*;

    #[test]
    fn an_appended_report_id_decodes_as_the_field() {
        let request = proto::ReportResultRequest {
            key: Some(proto::SessionKey {
                namespace: "bench".into(),
                agent: "coder".into(),
                conversation: "c-7".into(),
            }),
            resumed_session_id: "s".into(),
            ..Default::default()
        };
        let id = ReportId::new(0xdead_beef, 3, 42);
        let mut bytes = request.encode_to_vec();
        bytes.push(REPORT_ID_TAG);
        bytes.push(id.as_bytes().len() as u8);
        bytes.extend_from_slice(id.as_bytes());
        let decoded = proto::ReportResultRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(decoded.report_id, "deadbeef-3-42");
        assert_eq!(decoded.key, request.key);
    }

    #[test]
    fn the_longest_report_id_fits() {
        let id = ReportId::new(u64::MAX, usize::MAX, u64::MAX);
        assert_eq!(
            std::str::from_utf8(id.as_bytes()).unwrap(),
            format!("{:x}-{}-{}", u64::MAX, usize::MAX, u64::MAX)
        );
    }
}
