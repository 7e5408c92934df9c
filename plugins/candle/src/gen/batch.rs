//! Continuous batching (issue 17): the generations of one chat model decode together.
//!
//! Each `model.infer` call for a chat model that runs the plugin's own forward pass puts its
//! request (a [`Job`]) into the model's [`Batcher`] and then, on its own (the host's) thread,
//! loops: it hands the caller the tokens and text the steps made for it (streaming, the token
//! counter), polls the caller's cancel flag, and, when no other caller is running a step, runs
//! one itself on the plugin's pool (`Runtime::install`). A step prefills the newcomers, then
//! runs one `decode_step` over every active sequence (each with its own KV cache) and samples
//! each request's next token with its own sampler; finished and cancelled requests leave
//! between steps. So there is no batching thread: whichever caller is waiting runs the next
//! step for all of them, and nothing is left running once the last caller has its answer (the
//! plugin stays unloadable). Each sequence's numbers are those it gets decoded alone, so a
//! greedy answer does not depend on what else is in the batch.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, TryLockError};
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use candle_transformers::generation::LogitsProcessor;
use tokenizers::Tokenizer;

use crate::chat::{argmax, Finish, Generation};
use crate::error::{candle_msg, Error, Result};
use crate::gen::model::{Model, Scratch, Sequence};
use crate::runtime::Runtime;

/// One generation request, checked and tokenized.
pub struct Job {
    pub prompt: Vec<u32>,
    pub max_tokens: usize,
    pub stops: Vec<String>,
    /// Greedy: the first largest logit (no sampler involved).
    pub greedy: bool,
    pub sampler: LogitsProcessor,
    /// When the call began (for `first_token_s`).
    pub started: Instant,
}

/// What the steps tell a request's caller.
enum Event {
    /// A token was generated; the text that became certain with it (may be empty).
    Token(String),
    /// The generation ended.
    Done(Result<Finished>),
}

struct Finished {
    finish: Finish,
    text: String,
    /// Text not yet handed out (held back as a possible stop string or incomplete UTF-8).
    rest: String,
    completion_tokens: usize,
    first_token_s: f64,
}

/// The tokenizer and end-of-text tokens of the model.
pub struct Vocab<'a> {
    pub tokenizer: &'a Tokenizer,
    pub eos: &'a [u32],
}

struct Slot {
    job: Job,
    seq: Sequence,
    generated: Vec<u32>,
    /// The token to feed at the next step.
    next: u32,
    text: String,
    emitted: usize,
    first_token_s: f64,
    cancel: Arc<AtomicBool>,
    tx: mpsc::Sender<Event>,
}

#[derive(Default)]
struct Active {
    slots: Vec<Slot>,
    scratch: Box<Scratch>,
}

/// A chat model's shared batch (see the module docs).
#[derive(Default)]
pub struct Batcher {
    queue: Mutex<Vec<Slot>>,
    /// The running sequences; whoever holds this lock runs the step.
    active: Mutex<Active>,
    /// The most sequences one decode step has run.
    widest: AtomicUsize,
}

fn internal(e: candle_core::Error) -> Error {
    Error::internal(format!("model: {}", candle_msg(&e)))
}

impl Batcher {
    /// The most sequences a single decode step has run so far.
    pub fn widest(&self) -> usize {
        self.widest.load(Ordering::SeqCst)
    }

    /// Requests in the batch (waiting or active); waits for a running step.
    pub fn held(&self) -> usize {
        let queued = self.queue.lock().map(|q| q.len()).unwrap_or(0);
        queued + self.active.lock().map(|a| a.slots.len()).unwrap_or(0)
    }

    /// Run `job` in the batch; returns once it is done. `on_text` gets each certain piece of
    /// text (an error stops the generation with that error), `on_token` is called once per
    /// generated token, `cancelled` is polled between steps (and every 50 ms while waiting).
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &self,
        runtime: &Runtime,
        model: &Model,
        vocab: &Vocab,
        job: Job,
        on_text: &mut dyn FnMut(&str) -> Result<()>,
        cancelled: &dyn Fn() -> bool,
        on_token: &dyn Fn(),
    ) -> Result<Generation> {
        let started = job.started;
        let prompt_tokens = job.prompt.len();
        let (tx, rx) = mpsc::channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let slot = Slot {
            seq: model.sequence(job.prompt.len() + job.max_tokens),
            job,
            generated: Vec::new(),
            next: 0,
            text: String::new(),
            emitted: 0,
            first_token_s: 0.0,
            cancel: cancel.clone(),
            tx,
        };
        self.queue.lock().map_err(|_| Error::internal("poisoned"))?.push(slot);
        let mut failure: Option<Error> = None;
        let mut handle = |ev: Event, failure: &mut Option<Error>| -> Option<Result<Finished>> {
            match ev {
                Event::Token(text) => {
                    on_token();
                    if !text.is_empty() && failure.is_none() {
                        if let Err(e) = on_text(&text) {
                            *failure = Some(e);
                            cancel.store(true, Ordering::SeqCst);
                        }
                    }
                    None
                }
                Event::Done(r) => Some(r),
            }
        };
        let done = 'wait: loop {
            loop {
                match rx.try_recv() {
                    Ok(ev) => {
                        if let Some(d) = handle(ev, &mut failure) {
                            break 'wait d;
                        }
                    }
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        break 'wait Err(Error::internal("the batch dropped this generation"))
                    }
                }
            }
            if cancelled() {
                cancel.store(true, Ordering::SeqCst);
            }
            match self.active.try_lock() {
                Ok(mut guard) => {
                    let active = &mut *guard;
                    if let Err(e) = runtime.install(|| self.step(model, vocab, active)) {
                        // The pool is gone: the slot leaves at the next step anybody runs.
                        cancel.store(true, Ordering::SeqCst);
                        return Err(e);
                    }
                }
                Err(TryLockError::WouldBlock) => match rx.recv_timeout(Duration::from_millis(50)) {
                    Ok(ev) => {
                        if let Some(d) = handle(ev, &mut failure) {
                            break 'wait d;
                        }
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        break 'wait Err(Error::internal("the batch dropped this generation"))
                    }
                },
                Err(TryLockError::Poisoned(p)) => {
                    // A step panicked: its sequences end with an error, the batch goes on.
                    let mut g = p.into_inner();
                    for s in g.slots.drain(..) {
                        let _ = s.tx.send(Event::Done(Err(Error::internal(
                            "a generation step failed; this generation was dropped",
                        ))));
                    }
                    *g.scratch = Scratch::default();
                    drop(g);
                    self.active.clear_poison();
                }
            }
        };
        if let Some(e) = failure {
            return Err(e);
        }
        let f = done?;
        if !f.rest.is_empty() {
            on_text(&f.rest)?;
        }
        Ok(Generation {
            text: f.text,
            finish: f.finish,
            prompt_tokens,
            completion_tokens: f.completion_tokens,
            first_token_s: f.first_token_s,
            total_s: started.elapsed().as_secs_f64(),
        })
    }

    /// One step (on the pool): prefill the newcomers, drop the cancelled, decode the rest.
    fn step(&self, model: &Model, vocab: &Vocab, active: &mut Active) {
        let newcomers = std::mem::take(&mut *self.queue.lock().unwrap_or_else(|p| p.into_inner()));
        for mut slot in newcomers {
            if slot.cancel.load(Ordering::SeqCst) {
                slot.finish(Finish::Cancelled);
                continue;
            }
            let prompt = std::mem::take(&mut slot.job.prompt);
            let r = model.prefill(&mut active.scratch, &mut slot.seq, &prompt);
            match r.and_then(|()| slot.take_token(vocab)) {
                Ok(false) => active.slots.push(slot),
                Ok(true) => {}
                Err(e) => {
                    let _ = slot.tx.send(Event::Done(Err(e)));
                }
            }
        }
        active.slots.retain_mut(|s| {
            let leave = s.cancel.load(Ordering::SeqCst);
            if leave {
                s.finish(Finish::Cancelled);
            }
            !leave
        });
        if !active.slots.is_empty() {
            let tokens: Vec<u32> = active.slots.iter().map(|s| s.next).collect();
            let mut seqs: Vec<&mut Sequence> =
                active.slots.iter_mut().map(|s| &mut s.seq).collect();
            let n = seqs.len();
            match model.decode_step(&mut active.scratch, &mut seqs, &tokens) {
                Err(e) => {
                    for s in active.slots.drain(..) {
                        let _ = s.tx.send(Event::Done(Err(e.clone())));
                    }
                }
                Ok(()) => {
                    self.widest.fetch_max(n, Ordering::SeqCst);
                    let mut keep = Vec::with_capacity(n);
                    for mut s in active.slots.drain(..) {
                        match s.take_token(vocab) {
                            Ok(false) => keep.push(s),
                            Ok(true) => {}
                            Err(e) => {
                                let _ = s.tx.send(Event::Done(Err(e)));
                            }
                        }
                    }
                    active.slots = keep;
                }
            }
        }
        if active.slots.is_empty() {
            // Nothing of a finished batch stays behind (the buffers grow again as needed).
            *active.scratch = Scratch::default();
            active.slots = Vec::new();
        }
    }
}

impl Slot {
    /// Pick the next token from the sequence's logits and hand it out; true when the
    /// generation ended (and was reported).
    fn take_token(&mut self, vocab: &Vocab) -> Result<bool> {
        let next = if self.job.greedy {
            argmax(self.seq.logits())
        } else {
            let logits = Tensor::new(self.seq.logits(), &Device::Cpu).map_err(internal)?;
            self.job.sampler.sample(&logits).map_err(internal)?
        };
        if self.generated.is_empty() {
            self.first_token_s = self.job.started.elapsed().as_secs_f64();
        }
        if vocab.eos.contains(&next) {
            self.finish(Finish::Stop);
            return Ok(true);
        }
        self.generated.push(next);
        self.next = next;
        self.text = vocab
            .tokenizer
            .decode(&self.generated, true)
            .map_err(|e| Error::internal(format!("tokenizer: {e}")))?;
        if let Some(cut) = self.job.stops.iter().filter_map(|s| self.text.find(s.as_str())).min() {
            self.text.truncate(cut);
            let _ = self.tx.send(Event::Token(String::new()));
            self.finish(Finish::Stop);
            return Ok(true);
        }
        // Hold back an incomplete UTF-8 sequence and a possible start of a stop string.
        let mut safe = self.text.len();
        if self.text.ends_with('\u{FFFD}') {
            safe -= '\u{FFFD}'.len_utf8();
        }
        safe -= crate::chat::partial_stop_suffix(&self.text[..safe], &self.job.stops);
        let piece = if safe > self.emitted {
            let p = self.text[self.emitted..safe].to_string();
            self.emitted = safe;
            p
        } else {
            String::new()
        };
        let _ = self.tx.send(Event::Token(piece));
        if self.generated.len() >= self.job.max_tokens {
            self.finish(Finish::Length);
            return Ok(true);
        }
        Ok(false)
    }

    /// Report the end of the generation to its caller.
    fn finish(&mut self, finish: Finish) {
        let rest = match finish {
            Finish::Cancelled => String::new(),
            _ if self.text.len() > self.emitted => self.text[self.emitted..].to_string(),
            _ => String::new(),
        };
        let _ = self.tx.send(Event::Done(Ok(Finished {
            finish,
            text: std::mem::take(&mut self.text),
            rest,
            completion_tokens: self.generated.len(),
            first_token_s: self.first_token_s,
        })));
    }
}
