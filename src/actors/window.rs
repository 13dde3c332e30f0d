//! The data path's one message: a window of one job's records, travelling one way. The Ingestor
//! sends it to the EmbeddingBatcher ([`EmbedWindow`]), which fills in the missing vectors where
//! they lie and sends it on to the StoreWriter ([`WriteWindow`]), which writes it; only then does
//! the Ingestor hear of it again, by a small [`WindowWritten`] on its own channel. Nothing in the
//! path waits for an answer, and no chunk's text is copied on the way.
//!
//! A window is never lost in silence: its [`Ack`] says `Lost` to the Ingestor if the window is
//! dropped before an actor settles it (a stopped actor's mailbox, a panic), so a job never waits
//! for a window that will not come. A window whose job has gone (aborted, its channel closed) is
//! [`Window::abandoned`]: the batcher and the writer drop it without a call or a write.

use actix::prelude::*;
use tokio::sync::mpsc;

use crate::embed::EmbedError;
use crate::record::{keys, MetaValue, Record};
use crate::store::{CollectionSpec, StoreError};

/// Records of one job on their way to the store.
#[derive(Debug)]
pub struct Window {
    pub collection: CollectionSpec,
    /// In order; those at `to_embed` have no vector yet (the others carry one kept from the
    /// store).
    pub records: Vec<Record>,
    /// The records whose vectors the batcher fills, ascending: (position in `records`, tokens
    /// of its text as the reader counted them, by the model's tokenizer where known), so that
    /// calls are filled by the count the provider will make.
    pub to_embed: Vec<(usize, u32)>,
    /// Bytes of the corpus the window's chunks were read from (its share of the progress).
    pub bytes: u64,
    /// Tokens of the texts to embed, as the model counts them where known.
    pub tokens: u64,
    /// Where the batcher sends the window once its vectors are in.
    pub write_to: Recipient<WriteWindow>,
    pub ack: Ack,
}

impl Window {
    /// A window of records that carry their vectors already, for a caller outside the data path
    /// (a test, a tool) writing through the StoreWriter; the receiver hears what became of it.
    pub fn of_records(
        collection: CollectionSpec,
        records: Vec<Record>,
        write_to: Recipient<WriteWindow>,
    ) -> (Self, mpsc::UnboundedReceiver<WindowWritten>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let window = Self {
            collection,
            records,
            to_embed: Vec::new(),
            bytes: 0,
            tokens: 0,
            write_to,
            ack: Ack::new(tx),
        };
        (window, rx)
    }

    /// Whether the job that sent it has gone: it is not worth a call or a write.
    pub fn abandoned(&self) -> bool {
        self.ack.tx.as_ref().is_none_or(|tx| tx.is_closed())
    }

    /// Tells the job the window is written: `records` of them (its records may have gone into
    /// one upsert with other windows').
    pub fn written(self, records: usize) {
        let report = WindowReport {
            records,
            embedded: self.to_embed.len(),
            tokens: self.tokens,
            bytes: self.bytes,
        };
        self.ack.send(Ok(report));
    }

    /// Tells the job the window failed, giving it back (its records' metadata name the input at
    /// fault).
    pub fn failed(mut self, why: impl FnOnce(Window) -> WindowFailed) {
        let ack = std::mem::take(&mut self.ack);
        ack.send_failure(why(self));
    }

    /// The file and chunk (or line) of record `position`, from its metadata.
    pub fn source_of(&self, position: usize) -> Option<(String, i64)> {
        let metadata = &self.records.get(position)?.metadata;
        let source = match metadata.get(keys::SOURCE)? {
            MetaValue::Str(s) => s.clone(),
            _ => return None,
        };
        let index = match metadata.get(keys::CHUNK_INDEX)? {
            MetaValue::Int(i) => *i,
            _ => return None,
        };
        Some((source, index))
    }
}

/// The channel back to the job: settled once, by `written` or `failed`; `Lost` if dropped
/// unsettled.
#[derive(Debug, Default)]
pub struct Ack {
    tx: Option<mpsc::UnboundedSender<WindowWritten>>,
}

impl Ack {
    pub fn new(tx: mpsc::UnboundedSender<WindowWritten>) -> Self {
        Self { tx: Some(tx) }
    }

    fn send(mut self, result: Result<WindowReport, WindowFailed>) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(WindowWritten { result });
        }
    }

    fn send_failure(self, failed: WindowFailed) {
        self.send(Err(failed));
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(WindowWritten {
                result: Err(WindowFailed::Lost),
            });
        }
    }
}

/// To the EmbeddingBatcher: fill in the window's vectors, then send it to `write_to`.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct EmbedWindow(pub Window);

/// To the StoreWriter: upsert the window's records into its collection, then tell its job.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct WriteWindow(pub Window);

/// To the job: what became of one window.
#[derive(Debug)]
pub struct WindowWritten {
    pub result: Result<WindowReport, WindowFailed>,
}

/// A window written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WindowReport {
    pub records: usize,
    /// Of `records`, those embedded by this run (the others kept their stored vector).
    pub embedded: usize,
    pub tokens: u64,
    pub bytes: u64,
}

/// Why a window was not written.
#[derive(Debug)]
pub enum WindowFailed {
    /// The provider failed; `error.input`, when set, is the position in the window's records
    /// of the one input it refused.
    Embedding {
        error: EmbedError,
        window: Window,
    },
    Store(StoreError),
    /// Dropped before an actor settled it: an actor of the path stopped.
    Lost,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(tx: mpsc::UnboundedSender<WindowWritten>) -> Window {
        Window {
            collection: CollectionSpec {
                name: "p_works".into(),
                embedding_model: "m".into(),
                dimension: 2,
            },
            records: Vec::new(),
            to_embed: Vec::new(),
            bytes: 7,
            tokens: 0,
            write_to: NoWriter.start().recipient(),
            ack: Ack::new(tx),
        }
    }

    struct NoWriter;
    impl Actor for NoWriter {
        type Context = Context<Self>;
    }
    impl Handler<WriteWindow> for NoWriter {
        type Result = ();
        fn handle(&mut self, _: WriteWindow, _: &mut Context<Self>) {}
    }

    #[actix::test]
    async fn a_window_dropped_unsettled_says_lost_and_a_settled_one_says_it_once() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        drop(window(tx.clone()));
        assert!(matches!(
            rx.recv().await.unwrap().result,
            Err(WindowFailed::Lost)
        ));
        window(tx.clone()).written(0);
        assert_eq!(rx.recv().await.unwrap().result.unwrap().bytes, 7);
        window(tx.clone()).failed(|w| WindowFailed::Embedding {
            error: EmbedError::permanent("refused"),
            window: w,
        });
        let Err(WindowFailed::Embedding { window: back, .. }) = rx.recv().await.unwrap().result
        else {
            panic!("the window comes back with its failure");
        };
        drop(back);
        drop(tx);
        assert!(
            rx.recv().await.is_none(),
            "a window given back says nothing more"
        );
    }

    #[actix::test]
    async fn a_window_whose_job_has_gone_is_abandoned() {
        let (tx, rx) = mpsc::unbounded_channel();
        let w = window(tx);
        assert!(!w.abandoned());
        drop(rx);
        assert!(w.abandoned());
    }
}
