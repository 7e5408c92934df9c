//! Continuous batching (issue 17): the generations of one chat model decode together.
//!
//! Each `model.infer` call for a chat model that runs the plugin's own forward pass puts its
//! request (a [`Job`]) into the model's [`Batcher`] and then, on its own (the host's) thread,
//! loops: it hands the caller the tokens and text the steps made for it (streaming, the token
//! counter), polls the caller's cancel flag, and, when no other caller is running a step, runs
//! one itself on the plugin's pool (`Runtime::install`). A step first spends its prefill
//! budget ([`Batcher::prefill_budget`], [`DEFAULT_PREFILL_BUDGET`] prompt tokens): the
//! prompts not yet processed advance by one chunk each while the budget lasts, the one with
//! the fewest tokens left first ([`serve_order`]: a short prompt that comes while a long one
//! is read goes ahead of the long one's next chunk instead of waiting for its whole prefill;
//! one passed over [`MAX_SKIPS`] steps in a row goes first), so a long prompt is processed
//! over several steps; a request whose prompt is done
//! gets its first token and joins the decoding ones. Then the step runs one `decode_step` over
//! every decoding sequence (each with its own KV cache) and samples each request's next token
//! with its own sampler. So a long prompt that arrives delays the others' next token by one
//! chunk per step, not by its whole prefill. Finished and cancelled requests (also one
//! cancelled halfway through its prompt) leave between steps. There is no batching thread:
//! whichever caller is waiting runs the next step for all of them, and nothing is left
//! running once the last caller has its answer (the plugin stays unloadable).
//!
//! Each sequence's numbers are those it gets decoded alone, so a greedy answer does not depend
//! on what else is in the batch: a prompt's chunk boundaries are fixed when it joins (every
//! `budget` tokens from its start: with the default, exactly the chunks `Model::prefill`
//! runs), never by what else a step does.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, TryLockError};
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use candle_transformers::generation::LogitsProcessor;
use tokenizers::Tokenizer;

use crate::chat::{argmax, Finish, Generation};
use crate::error::{candle_msg, Error, Result};
use crate::gen::model::{Model, Scratch, Sequence, MAX_CONTEXT, PREFILL_CHUNK};
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

/// Prompt tokens a step processes at most, unless set otherwise
/// ([`Batcher::set_prefill_budget`]): one [`PREFILL_CHUNK`].
pub const DEFAULT_PREFILL_BUDGET: usize = PREFILL_CHUNK;

/// Steps kept in [`Batcher::steps`] (the oldest are dropped).
const TRACE_STEPS: usize = 512;

/// Steps in a row a waiting prompt can be passed over by shorter ones before it goes first.
pub const MAX_SKIPS: usize = 4;

/// The order a step serves the waiting prompts in, given each one's prompt tokens left and
/// the steps in a row it was passed over (in arrival order): those passed over
/// [`MAX_SKIPS`] times first, in arrival order, then the rest by the tokens left, fewest
/// first, ties in arrival order. Shortest-first gives the lowest mean time to first token;
/// the skip bound keeps a long prompt from waiting for ever behind a stream of short ones.
pub fn serve_order(waiting: &[(usize, usize)]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..waiting.len()).collect();
    order.sort_by_key(|&i| {
        let (left, skips) = waiting[i];
        if skips >= MAX_SKIPS {
            (0, 0, i)
        } else {
            (1, left, i)
        }
    });
    order
}

/// What one step did (see [`Batcher::steps`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepTrace {
    /// Prompt tokens processed.
    pub prefill_tokens: usize,
    /// Prompt chunks run (one per request that advanced).
    pub prefill_chunks: usize,
    /// Sequences that got a token from the decode pass.
    pub decoded: usize,
    /// Requests whose prompt was still partly unprocessed after the step.
    pub prefilling: usize,
}

struct Slot {
    job: Job,
    seq: Sequence,
    /// Prompt tokens already in `seq`.
    prefilled: usize,
    /// The prompt's chunk length (the budget when the request came).
    chunk: usize,
    /// Steps in a row that passed this prompt over (see [`serve_order`]).
    skips: usize,
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
    /// Decoding: the prompt is done.
    slots: Vec<Slot>,
    /// The prompt is not yet (all) processed; in arrival order.
    prefilling: Vec<Slot>,
    scratch: Box<Scratch>,
}

/// A chat model's shared batch (see the module docs).
pub struct Batcher {
    queue: Mutex<Vec<Slot>>,
    /// The running sequences; whoever holds this lock runs the step.
    active: Mutex<Active>,
    /// The most sequences one decode step has run.
    widest: AtomicUsize,
    /// Prompt tokens a step processes at most.
    prefill_budget: AtomicUsize,
    /// The last [`TRACE_STEPS`] steps that did something.
    trace: Mutex<VecDeque<StepTrace>>,
}

impl Default for Batcher {
    fn default() -> Self {
        Self {
            queue: Mutex::default(),
            active: Mutex::default(),
            widest: AtomicUsize::new(0),
            prefill_budget: AtomicUsize::new(DEFAULT_PREFILL_BUDGET),
            trace: Mutex::default(),
        }
    }
}

fn internal(e: candle_core::Error) -> Error {
    Error::internal(format!("model: {}", candle_msg(&e)))
}

impl Batcher {
    /// The most sequences a single decode step has run so far.
    pub fn widest(&self) -> usize {
        self.widest.load(Ordering::SeqCst)
    }

    /// Requests in the batch (waiting, prefilling or decoding); waits for a running step.
    pub fn held(&self) -> usize {
        let queued = self.queue.lock().map(|q| q.len()).unwrap_or(0);
        queued + self.active.lock().map(|a| a.slots.len() + a.prefilling.len()).unwrap_or(0)
    }

    /// Prompt tokens one step processes at most (besides decoding every active sequence).
    pub fn prefill_budget(&self) -> usize {
        self.prefill_budget.load(Ordering::SeqCst)
    }

    /// Set [`Batcher::prefill_budget`] (1 to the context length, 4096): smaller keeps the
    /// others' tokens coming more evenly while a long prompt arrives, larger processes it in
    /// fewer, wider (more efficient) steps. A request keeps the chunk length it came with.
    pub fn set_prefill_budget(&self, tokens: usize) -> Result<()> {
        if !(1..=MAX_CONTEXT).contains(&tokens) {
            return Err(Error::bad_request(format!(
                "the prefill budget must be 1 to {MAX_CONTEXT} tokens per step, not {tokens}"
            )));
        }
        self.prefill_budget.store(tokens, Ordering::SeqCst);
        Ok(())
    }

    /// What the last steps did (up to 512, oldest first; steps that did nothing are left out).
    pub fn steps(&self) -> Vec<StepTrace> {
        self.trace.lock().map(|t| t.iter().copied().collect()).unwrap_or_default()
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
            prefilled: 0,
            chunk: self.prefill_budget(),
            skips: 0,
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
                    let prefilling = std::mem::take(&mut g.prefilling);
                    for s in g.slots.drain(..).chain(prefilling) {
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

    /// One step (on the pool): drop the cancelled, spend the prefill budget on the prompts
    /// not yet processed (a chunk each, in [`serve_order`]), decode the rest.
    fn step(&self, model: &Model, vocab: &Vocab, active: &mut Active) {
        let newcomers = std::mem::take(&mut *self.queue.lock().unwrap_or_else(|p| p.into_inner()));
        active.prefilling.extend(newcomers);
        for slots in [&mut active.prefilling, &mut active.slots] {
            slots.retain_mut(|s| {
                let leave = s.cancel.load(Ordering::SeqCst);
                if leave {
                    s.finish(Finish::Cancelled);
                }
                !leave
            });
        }
        let budget = self.prefill_budget();
        let mut trace =
            StepTrace { prefill_tokens: 0, prefill_chunks: 0, decoded: 0, prefilling: 0 };
        let waiting: Vec<(usize, usize)> =
            active.prefilling.iter().map(|s| (s.job.prompt.len() - s.prefilled, s.skips)).collect();
        // What each waiting prompt's chunk led to: None (not run, or more chunks to come),
        // Some(Ok(ended at its first token)) or Some(Err).
        let mut outcome: Vec<Option<Result<bool>>> = waiting.iter().map(|_| None).collect();
        for i in serve_order(&waiting) {
            let slot = &mut active.prefilling[i];
            let end = slot.job.prompt.len().min(slot.prefilled + slot.chunk);
            let n = end - slot.prefilled;
            // A chunk that does not fit waits for the next step (unless the step has done
            // nothing yet: a request that came with a larger budget still advances).
            if trace.prefill_tokens > 0 && trace.prefill_tokens + n > budget {
                slot.skips += 1;
                continue;
            }
            slot.skips = 0;
            let r = if n == 0 {
                Err(Error::bad_request("the prompt has no tokens"))
            } else {
                let chunk = &slot.job.prompt[slot.prefilled..end];
                model.prefill_chunk(&mut active.scratch, &mut slot.seq, chunk)
            };
            trace.prefill_tokens += n;
            trace.prefill_chunks += 1;
            slot.prefilled = end;
            outcome[i] = match r {
                Ok(()) if end < slot.job.prompt.len() => None,
                Ok(()) => {
                    slot.job.prompt = Vec::new();
                    Some(slot.take_token(vocab))
                }
                Err(e) => Some(Err(e)),
            };
        }
        // Those whose prompt is done join the decoding ones (in arrival order).
        for (slot, out) in std::mem::take(&mut active.prefilling).into_iter().zip(outcome) {
            match out {
                None => active.prefilling.push(slot),
                Some(Ok(false)) => active.slots.push(slot),
                Some(Ok(true)) => {}
                Some(Err(e)) => {
                    let _ = slot.tx.send(Event::Done(Err(e)));
                }
            }
        }
        trace.prefilling = active.prefilling.len();
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
                    trace.decoded = n;
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
        if trace.prefill_chunks > 0 || trace.decoded > 0 {
            let mut t = self.trace.lock().unwrap_or_else(|p| p.into_inner());
            if t.len() == TRACE_STEPS {
                t.pop_front();
            }
            t.push_back(trace);
        }
        if active.slots.is_empty() && active.prefilling.is_empty() {
            // Nothing of a finished batch stays behind (the buffers grow again as needed).
            *active.scratch = Scratch::default();
            active.slots = Vec::new();
            active.prefilling = Vec::new();
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

#[cfg(test)]
mod tests {
    use super::{serve_order, MAX_SKIPS};

    #[test]
    fn fewest_tokens_left_first_ties_in_arrival_order() {
        // A long prompt (1,000 left), then a short one (7), a middle one (300), another short.
        assert_eq!(serve_order(&[(1000, 0), (7, 0), (300, 0), (7, 0)]), [1, 3, 2, 0]);
        assert_eq!(serve_order(&[]), Vec::<usize>::new());
        assert_eq!(serve_order(&[(5, 0)]), [0]);
    }

    #[test]
    fn a_prompt_passed_over_max_skips_times_goes_first() {
        assert_eq!(serve_order(&[(1000, MAX_SKIPS - 1), (7, 0)]), [1, 0]);
        assert_eq!(serve_order(&[(1000, MAX_SKIPS), (7, 0)]), [0, 1]);
        // Several passed over that often: in arrival order, before all others.
        assert_eq!(serve_order(&[(9, 0), (1000, MAX_SKIPS + 2), (500, MAX_SKIPS)]), [1, 2, 0]);
    }
}
