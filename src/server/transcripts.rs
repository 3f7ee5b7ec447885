//! The `TranscriptService` handlers (issue 18): decode and validate (convert), check the
//! namespace against the caller's token as SessionService does, call the transcript service,
//! encode. LoadTranscript streams: its first chunk is read before the response starts (so a bad
//! key or an unavailable store is the call's status), the rest page by page from a task that stops
//! when the client goes away. No rule and no SQL lives here.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::auth::Caller;
use super::convert;
use super::grpc::authorize;
use crate::domain::{SummaryDialect, TranscriptKey};
use crate::proto::{self, transcript_service_server::TranscriptService};
use crate::service::ServiceError;
use crate::transcripts::Transcripts;

/// Bytes of entry text a load chunk aims at (a single larger entry goes alone).
const CHUNK_BYTES: u64 = 1024 * 1024;
/// Most entries in one load chunk (bounds a page query of tiny entries).
const CHUNK_ENTRIES: u32 = 4096;
/// Chunks read ahead of a slow client.
const CHUNKS_AHEAD: usize = 2;

#[derive(Debug, Clone)]
pub struct TranscriptApi {
    transcripts: Arc<Transcripts>,
}

impl TranscriptApi {
    pub fn new(transcripts: Arc<Transcripts>) -> Self {
        TranscriptApi { transcripts }
    }
}

/// One LoadTranscript stream's position: the chunks are read page by page up to the snapshot the
/// first page fixed (`upto`), entries appended later are left out.
struct Load {
    transcripts: Arc<Transcripts>,
    key: TranscriptKey,
    /// The last seq sent (or the request's after_seq).
    cursor: i64,
    /// The transcript's last seq when the load began; None before the first page.
    upto: Option<i64>,
    /// The summary dialect asked for, sent with the first chunk.
    summary: Option<SummaryDialect>,
}

impl Load {
    /// The next chunk; None once everything up to the snapshot was sent.
    async fn next_chunk(&mut self) -> Result<Option<proto::LoadTranscriptResponse>, ServiceError> {
        if self.upto.is_some_and(|upto| self.cursor >= upto) {
            return Ok(None);
        }
        let first = self.upto.is_none();
        let page = if first {
            self.transcripts
                .load_first_page(&self.key, self.cursor, CHUNK_ENTRIES, CHUNK_BYTES, self.summary)
                .await?
        } else {
            self.transcripts
                .load_page(&self.key, self.cursor, CHUNK_ENTRIES, CHUNK_BYTES)
                .await?
        };
        let Some(page) = page else {
            if first {
                return Ok(Some(proto::LoadTranscriptResponse::default()));
            }
            return Err(ServiceError::TranscriptDeletedDuringLoad);
        };
        // Entries are numbered from 1 and never removed one by one: the last seq is the count.
        let count = i64::try_from(page.entry_count).unwrap_or(i64::MAX);
        let upto = *self.upto.get_or_insert(count);
        if count < upto {
            // Deleted (and written again) since the load began.
            return Err(ServiceError::TranscriptDeletedDuringLoad);
        }
        let entries: Vec<_> = page.entries.into_iter().take_while(|e| e.seq <= upto).collect();
        if !first && entries.is_empty() {
            return Ok(None);
        }
        self.cursor = entries.last().map_or(self.cursor, |e| e.seq);
        let info = first.then(|| proto::TranscriptInfo {
            entry_count: page.entry_count,
            byte_count: page.byte_count,
            mtime_ms: page.mtime_ms,
            upto_seq: u64::try_from(upto).unwrap_or(0),
        });
        Ok(Some(proto::LoadTranscriptResponse {
            found: true,
            entries: entries.into_iter().map(|e| e.json).collect(),
            last_seq: u64::try_from(self.cursor).unwrap_or(0),
            info,
            summary: convert::loaded_summary(page.summary),
        }))
    }

    /// Sends the chunks after the first until the snapshot is sent, the client goes away, or a
    /// page fails (sent as the stream's status).
    async fn send_rest(mut self, tx: mpsc::Sender<Result<proto::LoadTranscriptResponse, Status>>) {
        loop {
            let next = match self.next_chunk().await {
                Ok(Some(chunk)) => Ok(chunk),
                Ok(None) => return,
                Err(err) => Err(Status::from(err)),
            };
            let failed = next.is_err();
            if tx.send(next).await.is_err() || failed {
                return;
            }
        }
    }
}

#[tonic::async_trait]
impl TranscriptService for TranscriptApi {
    async fn append_entries(
        &self,
        request: Request<proto::AppendEntriesRequest>,
    ) -> Result<Response<proto::AppendEntriesResponse>, Status> {
        let caller = request.extensions().get::<Caller>().cloned();
        let mut request = request.into_inner();
        let key = convert::transcript_key(request.key.take())?;
        authorize(caller.as_ref(), key.namespace())?;
        let append = convert::append(key, request, self.transcripts.limits().max_entry_bytes)?;
        let answer = self
            .transcripts
            .append(&append.key, &append.append_id, &append.entries, append.summary.as_ref())
            .await?;
        Ok(Response::new(convert::append_response(answer)))
    }

    type LoadTranscriptStream = ReceiverStream<Result<proto::LoadTranscriptResponse, Status>>;

    async fn load_transcript(
        &self,
        request: Request<proto::LoadTranscriptRequest>,
    ) -> Result<Response<Self::LoadTranscriptStream>, Status> {
        let caller = request.extensions().get::<Caller>().cloned();
        let (key, after_seq, summary) = convert::load(request.into_inner())?;
        authorize(caller.as_ref(), key.namespace())?;
        let mut load = Load {
            transcripts: self.transcripts.clone(),
            key,
            cursor: after_seq,
            upto: None,
            summary,
        };
        let first = load.next_chunk().await?.unwrap_or_default();
        let (tx, rx) = mpsc::channel(CHUNKS_AHEAD);
        let found = first.found;
        // The channel is empty: the first chunk always fits.
        let _ = tx.try_send(Ok(first));
        if found {
            tokio::spawn(load.send_rest(tx).instrument(tracing::Span::current()));
        }
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn list_transcript_sessions(
        &self,
        request: Request<proto::ListTranscriptSessionsRequest>,
    ) -> Result<Response<proto::ListTranscriptSessionsResponse>, Status> {
        let caller = request.extensions().get::<Caller>().cloned();
        let request = request.into_inner();
        let (namespace, project_key, summary) = convert::sessions_request(&request)?;
        authorize(caller.as_ref(), &namespace)?;
        let sessions = self
            .transcripts
            .list_sessions(&namespace, &project_key, summary)
            .await?;
        Ok(Response::new(convert::sessions_response(sessions)))
    }

    async fn list_subkeys(
        &self,
        request: Request<proto::ListSubkeysRequest>,
    ) -> Result<Response<proto::ListSubkeysResponse>, Status> {
        let caller = request.extensions().get::<Caller>().cloned();
        let (namespace, project_key, session_id) = convert::subkeys_request(request.into_inner())?;
        authorize(caller.as_ref(), &namespace)?;
        let subpaths = self
            .transcripts
            .list_subkeys(&namespace, &project_key, &session_id)
            .await?;
        Ok(Response::new(proto::ListSubkeysResponse { subpaths }))
    }

    async fn delete_transcript(
        &self,
        request: Request<proto::DeleteTranscriptRequest>,
    ) -> Result<Response<proto::DeleteTranscriptResponse>, Status> {
        let caller = request.extensions().get::<Caller>().cloned();
        let key = convert::transcript_key(request.into_inner().key)?;
        authorize(caller.as_ref(), key.namespace())?;
        let deleted = self.transcripts.delete(&key).await?;
        Ok(Response::new(convert::delete_response(deleted)))
    }
}
