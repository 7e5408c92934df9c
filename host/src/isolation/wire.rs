//! The wire protocol between the host and a plugin's child process (`bkg plugin-runner`), over
//! the socketpair the child inherits at spawn.
//!
//! A frame is a little-endian `u32` length followed by that many bytes of message: a one-byte
//! tag, then the fields in order. Integers are little-endian; strings and byte strings are a
//! `u32` length and the bytes (bodies are carried raw, never escaped); an optional value is a
//! `0`/`1` byte and the value. Every frame is built whole in memory and written with one
//! `write_all`, under the writer's lock, so frames of different threads never interleave.
//!
//! The first frame each way is the handshake: the host sends `Hello` (protocol version, the
//! per-spawn cookie it also put in the child's environment), the child answers `HelloAck`
//! (its version, the cookie back, and the plugin's manifest or why it cannot serve). Then:
//! the host sends `Create` once, calls (`Call`, each with a call id; `Cancel` for one in
//! flight) and lifecycle operations (`Control`, each with a request id); the child answers a
//! call with `Begin`/`Chunk`s (a streamed answer) and one `Done`, an operation with
//! `ControlDone`. The plugin's requests to the host (`Callback`: bus calls, key-value store)
//! carry a request id of the child's and get one `CbReply` (a streamed bus call gets `CbChunk`s
//! first; the child sends `CbCancel` when its sink wants no more). A streamed call's chunks
//! are flow-controlled: the child sends at most `STREAM_WINDOW` ahead of the `Credit` the
//! host grants as its client takes them; a streamed bus answer's the same way the other way
//! round (the host sends at most `STREAM_WINDOW` `CbChunk`s ahead of the child's `CbCredit`). `Log` lines and `Heap`
//! figures need no answer. `Shutdown` asks the child to stop the plugin and exit.

use std::io::{Read, Write};

/// The protocol version both sides must speak.
pub const PROTOCOL_VERSION: u32 = 2;

/// How many chunks of one streamed call the child may send ahead of what the host took: the
/// host grants more with `Credit` as its client takes them, so a slow client slows the
/// plugin down instead of making the host buffer its stream.
pub const STREAM_WINDOW: u32 = 16;

/// The largest frame either side accepts (a request or answer body travels in one frame).
pub const MAX_FRAME: usize = 1 << 30;

/// An error a plugin or the host returned: an `ErrorKind` and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError {
    pub kind: u16,
    pub message: String,
}

/// One capability of a manifest (the fields of `FfiCapability`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireCapability {
    pub name: String,
    pub description: String,
    pub input_schema: String,
    pub output_schema: String,
    pub streaming: bool,
    pub scope: String,
}

/// A plugin's manifest as the child read it (the fields of `FfiManifest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireManifest {
    pub id: String,
    pub name: String,
    pub version: String,
    pub description: String,
    pub capabilities: Vec<WireCapability>,
    /// (method, path)
    pub routes: Vec<(String, String)>,
    pub route_prefix: Option<String>,
    pub config_schema: String,
    pub max_concurrency: u32,
    pub config_needs_restart: bool,
}

/// One call (the fields of `FfiRequest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireCall {
    pub call: u64,
    /// 0: a capability, 1: a route.
    pub kind: u8,
    pub target: String,
    pub method: String,
    pub query: String,
    pub content_type: String,
    pub body: Vec<u8>,
}

/// A complete answer (or a stream's tail).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireReply {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

/// A lifecycle operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireControl {
    Start,
    Stop,
    Status,
    Config,
    Configure(String),
}

/// What the plugin in the child asks of the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CbOp {
    /// A bus call; `stream`: the chunks of a streamed answer come as `CbChunk`s.
    Bus {
        plugin: String,
        capability: String,
        content_type: String,
        body: Vec<u8>,
        stream: bool,
    },
    KvGet {
        key: String,
    },
    KvPut {
        key: String,
        value: Vec<u8>,
    },
    KvDelete {
        key: String,
    },
    KvKeys {
        prefix: String,
    },
}

/// The host's answer to a callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CbValue {
    Unit,
    Bool(bool),
    Value(Option<Vec<u8>>),
    Keys(Vec<String>),
    Reply(WireReply),
}

/// Host to child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMsg {
    Hello {
        version: u32,
        cookie: String,
    },
    /// Construct the plugin; the child runs calls on this many threads.
    Create {
        workers: u32,
    },
    Call(WireCall),
    Cancel {
        call: u64,
    },
    Control {
        req: u64,
        op: WireControl,
    },
    CbReply {
        req: u64,
        result: Result<CbValue, WireError>,
    },
    CbChunk {
        req: u64,
        data: Vec<u8>,
    },
    Shutdown,
    /// The host took `chunks` more chunks of a streamed call: the child may send that many
    /// more (see [`STREAM_WINDOW`]).
    Credit {
        call: u64,
        chunks: u32,
    },
}

/// Child to host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChildMsg {
    HelloAck {
        version: u32,
        cookie: String,
        result: Result<WireManifest, String>,
    },
    Created {
        result: Result<(), String>,
    },
    Begin {
        call: u64,
        content_type: String,
    },
    Chunk {
        call: u64,
        data: Vec<u8>,
    },
    Done {
        call: u64,
        result: Result<WireReply, WireError>,
    },
    ControlDone {
        req: u64,
        result: Result<String, WireError>,
    },
    Log {
        level: u8,
        target: String,
        message: String,
    },
    /// `call`: the call the asking thread runs (0: none), so a bus call is cancelled with it.
    Callback {
        req: u64,
        call: u64,
        op: CbOp,
    },
    CbCancel {
        req: u64,
    },
    Heap {
        bytes: Option<u64>,
    },
    /// The plugin took `chunks` more chunks of a streamed bus answer: the host may send that
    /// many more `CbChunk`s (see [`STREAM_WINDOW`]).
    CbCredit {
        req: u64,
        chunks: u32,
    },
}

/// Why a frame could not be read as a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad frame: {0}")]
pub struct DecodeError(pub String);

// ---- encoding ----

/// Builds one frame: the length is filled in by [`Enc::finish`].
struct Enc(Vec<u8>);

impl Enc {
    fn new(tag: u8, capacity: usize) -> Enc {
        let mut buf = Vec::with_capacity(capacity + 5);
        buf.extend_from_slice(&[0, 0, 0, 0, tag]);
        Enc(buf)
    }
    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bool(&mut self, v: bool) -> &mut Self {
        self.u8(v as u8)
    }
    fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.u32(v.len() as u32);
        self.0.extend_from_slice(v);
        self
    }
    fn str(&mut self, v: &str) -> &mut Self {
        self.bytes(v.as_bytes())
    }
    fn error(&mut self, e: &WireError) -> &mut Self {
        self.u16(e.kind).str(&e.message)
    }
    fn reply(&mut self, r: &WireReply) -> &mut Self {
        self.u16(r.status).str(&r.content_type).bytes(&r.body)
    }
    fn finish(mut self) -> Vec<u8> {
        let len = (self.0.len() - 4) as u32;
        self.0[..4].copy_from_slice(&len.to_le_bytes());
        self.0
    }
}

/// The frame of `HostMsg::Call` built from borrowed parts (the host's request as it is,
/// copied once into the frame).
pub fn encode_call(
    call: u64,
    kind: u8,
    target: &str,
    method: &str,
    query: &str,
    content_type: &str,
    body: &[u8],
) -> Vec<u8> {
    let size = 40 + target.len() + method.len() + query.len();
    let mut e = Enc::new(3, size + content_type.len() + body.len());
    e.u64(call).u8(kind).str(target).str(method).str(query).str(content_type).bytes(body);
    e.finish()
}

impl HostMsg {
    /// The whole frame, length prefix included.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            HostMsg::Hello { version, cookie } => {
                let mut e = Enc::new(1, 8 + cookie.len());
                e.u32(*version).str(cookie);
                e.finish()
            }
            HostMsg::Create { workers } => {
                let mut e = Enc::new(2, 4);
                e.u32(*workers);
                e.finish()
            }
            HostMsg::Call(c) => encode_call(
                c.call,
                c.kind,
                &c.target,
                &c.method,
                &c.query,
                &c.content_type,
                &c.body,
            ),
            HostMsg::Cancel { call } => {
                let mut e = Enc::new(4, 8);
                e.u64(*call);
                e.finish()
            }
            HostMsg::Control { req, op } => {
                let mut e = Enc::new(5, 16);
                e.u64(*req);
                match op {
                    WireControl::Start => e.u8(0),
                    WireControl::Stop => e.u8(1),
                    WireControl::Status => e.u8(2),
                    WireControl::Config => e.u8(3),
                    WireControl::Configure(text) => e.u8(4).str(text),
                };
                e.finish()
            }
            HostMsg::CbReply { req, result } => {
                let mut e = Enc::new(6, 32);
                e.u64(*req);
                match result {
                    Err(err) => {
                        e.u8(0).error(err);
                    }
                    Ok(CbValue::Unit) => {
                        e.u8(1);
                    }
                    Ok(CbValue::Bool(b)) => {
                        e.u8(2).bool(*b);
                    }
                    Ok(CbValue::Value(v)) => {
                        e.u8(3);
                        match v {
                            Some(v) => e.u8(1).bytes(v),
                            None => e.u8(0),
                        };
                    }
                    Ok(CbValue::Keys(keys)) => {
                        e.u8(4).u32(keys.len() as u32);
                        for k in keys {
                            e.str(k);
                        }
                    }
                    Ok(CbValue::Reply(r)) => {
                        e.u8(5).reply(r);
                    }
                }
                e.finish()
            }
            HostMsg::CbChunk { req, data } => {
                let mut e = Enc::new(7, 12 + data.len());
                e.u64(*req).bytes(data);
                e.finish()
            }
            HostMsg::Shutdown => Enc::new(8, 0).finish(),
            HostMsg::Credit { call, chunks } => {
                let mut e = Enc::new(9, 12);
                e.u64(*call).u32(*chunks);
                e.finish()
            }
        }
    }

    /// Read a message from a frame's payload (without the length prefix).
    pub fn decode(frame: &[u8]) -> Result<HostMsg, DecodeError> {
        let mut d = Dec::new(frame);
        let msg = match d.u8("message tag")? {
            1 => HostMsg::Hello { version: d.u32("version")?, cookie: d.string("cookie")? },
            2 => HostMsg::Create { workers: d.u32("workers")? },
            3 => HostMsg::Call(WireCall {
                call: d.u64("call id")?,
                kind: d.u8("call kind")?,
                target: d.string("target")?,
                method: d.string("method")?,
                query: d.string("query")?,
                content_type: d.string("content type")?,
                body: d.bytes("body")?,
            }),
            4 => HostMsg::Cancel { call: d.u64("call id")? },
            5 => {
                let req = d.u64("request id")?;
                let op = match d.u8("operation")? {
                    0 => WireControl::Start,
                    1 => WireControl::Stop,
                    2 => WireControl::Status,
                    3 => WireControl::Config,
                    4 => WireControl::Configure(d.string("config")?),
                    n => return Err(DecodeError(format!("unknown lifecycle operation {n}"))),
                };
                HostMsg::Control { req, op }
            }
            6 => {
                let req = d.u64("request id")?;
                let result = match d.u8("answer kind")? {
                    0 => Err(d.error()?),
                    1 => Ok(CbValue::Unit),
                    2 => Ok(CbValue::Bool(d.bool("flag")?)),
                    3 => Ok(CbValue::Value(match d.bool("presence")? {
                        true => Some(d.bytes("value")?),
                        false => None,
                    })),
                    4 => {
                        let n = d.u32("key count")? as usize;
                        let mut keys = Vec::with_capacity(n.min(d.left() / 4));
                        for _ in 0..n {
                            keys.push(d.string("key")?);
                        }
                        Ok(CbValue::Keys(keys))
                    }
                    5 => Ok(CbValue::Reply(d.reply()?)),
                    n => return Err(DecodeError(format!("unknown callback answer kind {n}"))),
                };
                HostMsg::CbReply { req, result }
            }
            7 => HostMsg::CbChunk { req: d.u64("request id")?, data: d.bytes("chunk")? },
            8 => HostMsg::Shutdown,
            9 => HostMsg::Credit { call: d.u64("call id")?, chunks: d.u32("chunks")? },
            n => return Err(DecodeError(format!("unknown host message tag {n}"))),
        };
        d.end()?;
        Ok(msg)
    }
}

impl ChildMsg {
    /// The whole frame, length prefix included.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            ChildMsg::HelloAck { version, cookie, result } => {
                let mut e = Enc::new(101, 256);
                e.u32(*version).str(cookie);
                match result {
                    Err(message) => {
                        e.u8(0).str(message);
                    }
                    Ok(m) => {
                        e.u8(1)
                            .str(&m.id)
                            .str(&m.name)
                            .str(&m.version)
                            .str(&m.description)
                            .u32(m.capabilities.len() as u32);
                        for c in &m.capabilities {
                            e.str(&c.name)
                                .str(&c.description)
                                .str(&c.input_schema)
                                .str(&c.output_schema)
                                .bool(c.streaming)
                                .str(&c.scope);
                        }
                        e.u32(m.routes.len() as u32);
                        for (method, path) in &m.routes {
                            e.str(method).str(path);
                        }
                        match &m.route_prefix {
                            Some(p) => e.u8(1).str(p),
                            None => e.u8(0),
                        };
                        e.str(&m.config_schema).u32(m.max_concurrency).bool(m.config_needs_restart);
                    }
                }
                e.finish()
            }
            ChildMsg::Created { result } => {
                let mut e = Enc::new(102, 8);
                match result {
                    Ok(()) => e.u8(1),
                    Err(message) => e.u8(0).str(message),
                };
                e.finish()
            }
            ChildMsg::Begin { call, content_type } => {
                let mut e = Enc::new(103, 12 + content_type.len());
                e.u64(*call).str(content_type);
                e.finish()
            }
            ChildMsg::Chunk { call, data } => {
                let mut e = Enc::new(104, 12 + data.len());
                e.u64(*call).bytes(data);
                e.finish()
            }
            ChildMsg::Done { call, result } => {
                let size = match result {
                    Ok(r) => 16 + r.content_type.len() + r.body.len(),
                    Err(err) => 16 + err.message.len(),
                };
                let mut e = Enc::new(105, size);
                e.u64(*call);
                match result {
                    Ok(r) => e.u8(1).reply(r),
                    Err(err) => e.u8(0).error(err),
                };
                e.finish()
            }
            ChildMsg::ControlDone { req, result } => {
                let mut e = Enc::new(106, 32);
                e.u64(*req);
                match result {
                    Ok(text) => e.u8(1).str(text),
                    Err(err) => e.u8(0).error(err),
                };
                e.finish()
            }
            ChildMsg::Log { level, target, message } => {
                let mut e = Enc::new(107, 9 + target.len() + message.len());
                e.u8(*level).str(target).str(message);
                e.finish()
            }
            ChildMsg::Callback { req, call, op } => {
                let mut e = Enc::new(108, 64);
                e.u64(*req).u64(*call);
                match op {
                    CbOp::Bus { plugin, capability, content_type, body, stream } => {
                        e.u8(0).str(plugin).str(capability).str(content_type).bytes(body);
                        e.bool(*stream)
                    }
                    CbOp::KvGet { key } => e.u8(1).str(key),
                    CbOp::KvPut { key, value } => e.u8(2).str(key).bytes(value),
                    CbOp::KvDelete { key } => e.u8(3).str(key),
                    CbOp::KvKeys { prefix } => e.u8(4).str(prefix),
                };
                e.finish()
            }
            ChildMsg::CbCancel { req } => {
                let mut e = Enc::new(109, 8);
                e.u64(*req);
                e.finish()
            }
            ChildMsg::CbCredit { req, chunks } => {
                let mut e = Enc::new(111, 12);
                e.u64(*req).u32(*chunks);
                e.finish()
            }
            ChildMsg::Heap { bytes } => {
                let mut e = Enc::new(110, 9);
                match bytes {
                    Some(b) => e.u8(1).u64(*b),
                    None => e.u8(0),
                };
                e.finish()
            }
        }
    }

    /// Read a message from a frame's payload (without the length prefix).
    pub fn decode(frame: &[u8]) -> Result<ChildMsg, DecodeError> {
        let mut d = Dec::new(frame);
        let msg = match d.u8("message tag")? {
            101 => {
                let version = d.u32("version")?;
                let cookie = d.string("cookie")?;
                let result = if d.bool("outcome")? {
                    let id = d.string("id")?;
                    let name = d.string("name")?;
                    let version = d.string("plugin version")?;
                    let description = d.string("description")?;
                    let n = d.u32("capability count")? as usize;
                    let mut capabilities = Vec::with_capacity(n.min(d.left() / 8));
                    for _ in 0..n {
                        capabilities.push(WireCapability {
                            name: d.string("capability name")?,
                            description: d.string("capability description")?,
                            input_schema: d.string("input schema")?,
                            output_schema: d.string("output schema")?,
                            streaming: d.bool("streaming")?,
                            scope: d.string("scope")?,
                        });
                    }
                    let n = d.u32("route count")? as usize;
                    let mut routes = Vec::with_capacity(n.min(d.left() / 8));
                    for _ in 0..n {
                        routes.push((d.string("route method")?, d.string("route path")?));
                    }
                    let route_prefix = match d.bool("route prefix presence")? {
                        true => Some(d.string("route prefix")?),
                        false => None,
                    };
                    Ok(WireManifest {
                        id,
                        name,
                        version,
                        description,
                        capabilities,
                        routes,
                        route_prefix,
                        config_schema: d.string("config schema")?,
                        max_concurrency: d.u32("max concurrency")?,
                        config_needs_restart: d.bool("config needs restart")?,
                    })
                } else {
                    Err(d.string("error")?)
                };
                ChildMsg::HelloAck { version, cookie, result }
            }
            102 => ChildMsg::Created {
                result: match d.bool("outcome")? {
                    true => Ok(()),
                    false => Err(d.string("error")?),
                },
            },
            103 => {
                ChildMsg::Begin { call: d.u64("call id")?, content_type: d.string("content type")? }
            }
            104 => ChildMsg::Chunk { call: d.u64("call id")?, data: d.bytes("chunk")? },
            105 => {
                let call = d.u64("call id")?;
                let result = match d.bool("outcome")? {
                    true => Ok(d.reply()?),
                    false => Err(d.error()?),
                };
                ChildMsg::Done { call, result }
            }
            106 => {
                let req = d.u64("request id")?;
                let result = match d.bool("outcome")? {
                    true => Ok(d.string("answer")?),
                    false => Err(d.error()?),
                };
                ChildMsg::ControlDone { req, result }
            }
            107 => ChildMsg::Log {
                level: d.u8("log level")?,
                target: d.string("log target")?,
                message: d.string("log message")?,
            },
            108 => {
                let req = d.u64("request id")?;
                let call = d.u64("call id")?;
                let op = match d.u8("callback kind")? {
                    0 => CbOp::Bus {
                        plugin: d.string("plugin")?,
                        capability: d.string("capability")?,
                        content_type: d.string("content type")?,
                        body: d.bytes("body")?,
                        stream: d.bool("stream")?,
                    },
                    1 => CbOp::KvGet { key: d.string("key")? },
                    2 => CbOp::KvPut { key: d.string("key")?, value: d.bytes("value")? },
                    3 => CbOp::KvDelete { key: d.string("key")? },
                    4 => CbOp::KvKeys { prefix: d.string("prefix")? },
                    n => return Err(DecodeError(format!("unknown callback kind {n}"))),
                };
                ChildMsg::Callback { req, call, op }
            }
            109 => ChildMsg::CbCancel { req: d.u64("request id")? },
            111 => ChildMsg::CbCredit { req: d.u64("request id")?, chunks: d.u32("chunks")? },
            110 => ChildMsg::Heap {
                bytes: match d.bool("heap presence")? {
                    true => Some(d.u64("heap bytes")?),
                    false => None,
                },
            },
            n => return Err(DecodeError(format!("unknown child message tag {n}"))),
        };
        d.end()?;
        Ok(msg)
    }
}

// ---- decoding ----

struct Dec<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Dec<'a> {
    fn new(buf: &'a [u8]) -> Dec<'a> {
        Dec { buf, pos: 0 }
    }
    fn left(&self) -> usize {
        self.buf.len() - self.pos
    }
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        if self.left() < n {
            return Err(DecodeError(format!(
                "truncated: {what} needs {n} bytes at offset {}, the frame has {} left",
                self.pos,
                self.left()
            )));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }
    fn u8(&mut self, what: &str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16, DecodeError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &str) -> Result<u32, DecodeError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self, what: &str) -> Result<u64, DecodeError> {
        let mut x = [0u8; 8];
        x.copy_from_slice(self.take(8, what)?);
        Ok(u64::from_le_bytes(x))
    }
    fn bool(&mut self, what: &str) -> Result<bool, DecodeError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            n => Err(DecodeError(format!("{what}: expected 0 or 1, got {n}"))),
        }
    }
    fn bytes(&mut self, what: &str) -> Result<Vec<u8>, DecodeError> {
        let n = self.u32(what)? as usize;
        Ok(self.take(n, what)?.to_vec())
    }
    fn string(&mut self, what: &str) -> Result<String, DecodeError> {
        let n = self.u32(what)? as usize;
        let b = self.take(n, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError(format!("{what} is not valid UTF-8")))
    }
    fn error(&mut self) -> Result<WireError, DecodeError> {
        Ok(WireError { kind: self.u16("error kind")?, message: self.string("error message")? })
    }
    fn reply(&mut self) -> Result<WireReply, DecodeError> {
        Ok(WireReply {
            status: self.u16("status")?,
            content_type: self.string("content type")?,
            body: self.bytes("body")?,
        })
    }
    fn end(&self) -> Result<(), DecodeError> {
        match self.left() {
            0 => Ok(()),
            n => Err(DecodeError(format!("{n} unexpected bytes after the message"))),
        }
    }
}

/// Read one frame's payload. `Ok(None)`: the other side closed the connection between
/// frames. A connection closed inside a frame, or a frame over [`MAX_FRAME`], is an error.
pub fn read_frame(r: &mut impl Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("the connection closed inside a frame's length ({got} of 4 bytes)"),
                ))
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes is over the limit of {MAX_FRAME}"),
        ));
    }
    let mut frame = vec![0u8; len];
    let mut got = 0;
    while got < len {
        match r.read(&mut frame[got..]) {
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("the connection closed inside a frame ({got} of {len} bytes)"),
                ))
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Some(frame))
}

/// Write one encoded frame with a single `write_all`.
pub fn write_frame(w: &mut impl Write, frame: &[u8]) -> std::io::Result<()> {
    w.write_all(frame)
}

/// A spin budget: `var` (microseconds; 0 turns the spin off) if set to a number, else
/// `default`. For measuring; an unreadable value is ignored with a warning.
pub fn spin_budget(var: &str, default: std::time::Duration) -> std::time::Duration {
    match std::env::var(var) {
        Err(_) => default,
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(us) => std::time::Duration::from_micros(us),
            Err(_) => {
                tracing::warn!("{var}={v:?} is not a number of microseconds; using {default:?}");
                default
            }
        },
    }
}

/// A reader's bounded, adaptive spin before a blocking read (host and child alike).
///
/// A blocking read that has to wait costs a wake-up of a sleeping thread (on a virtual CPU
/// that went idle, tens of microseconds). When a frame is due soon (the host has calls out;
/// the child answered a call a moment ago), the reader looks at the socket without blocking
/// for up to `budget` first, as long as at least half of the recent waits for a frame ended
/// within the budget (spun or blocked: a blocking wait is timed too, so the spin comes back
/// when the frames do). It never spins otherwise: the caller asks only when a frame is due.
pub struct Spin {
    budget: std::time::Duration,
    /// A moving average of how many of the recent waits ended within the budget (0..=1).
    hits: f64,
}

impl Spin {
    pub fn new(budget: std::time::Duration) -> Spin {
        Spin { budget, hits: 1.0 }
    }

    /// True when the recent waits ended within the budget often enough to spin.
    pub fn worth_it(&self) -> bool {
        !self.budget.is_zero() && self.hits >= 0.5
    }

    /// Note how long a wait for a frame took (spun or blocked).
    pub fn record(&mut self, waited: std::time::Duration) {
        let hit = if waited <= self.budget { 1.0 } else { 0.0 };
        self.hits = 0.8 * self.hits + 0.2 * hit;
    }

    /// Look at `fd` without blocking until it has something to read (or was closed: true)
    /// or the budget is spent (false), letting other threads of this CPU run in between.
    pub fn spin(&self, fd: std::os::fd::BorrowedFd<'_>) -> bool {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let until = std::time::Instant::now() + self.budget;
        loop {
            let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::ZERO) {
                Ok(n) if n > 0 => return true,
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return false,
            }
            if std::time::Instant::now() >= until {
                return false;
            }
            std::thread::yield_now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_round_trip(msg: HostMsg) {
        let frame = msg.encode();
        let len = u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 4, "length prefix of {msg:?}");
        assert_eq!(HostMsg::decode(&frame[4..]).unwrap(), msg);
    }

    fn child_round_trip(msg: ChildMsg) {
        let frame = msg.encode();
        let len = u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 4, "length prefix of {msg:?}");
        assert_eq!(ChildMsg::decode(&frame[4..]).unwrap(), msg);
    }

    fn manifest() -> WireManifest {
        WireManifest {
            id: "echo".into(),
            name: "Echo".into(),
            version: "1.2.3".into(),
            description: "says it back — ünïcode".into(),
            capabilities: vec![WireCapability {
                name: "echo".into(),
                description: "d".into(),
                input_schema: "{\"type\":\"object\"}".into(),
                output_schema: String::new(),
                streaming: true,
                scope: "admin".into(),
            }],
            routes: vec![("GET".into(), "/status".into())],
            route_prefix: Some("/v1".into()),
            config_schema: "{}".into(),
            max_concurrency: 7,
            config_needs_restart: true,
        }
    }

    #[test]
    fn every_host_message_round_trips() {
        host_round_trip(HostMsg::Hello { version: PROTOCOL_VERSION, cookie: "c00k1e".into() });
        host_round_trip(HostMsg::Create { workers: 4 });
        host_round_trip(HostMsg::Call(WireCall {
            call: u64::MAX,
            kind: 1,
            target: "echo".into(),
            method: "POST".into(),
            query: "a=1&b=2".into(),
            content_type: "application/octet-stream".into(),
            body: (0..=255u8).collect(),
        }));
        host_round_trip(HostMsg::Cancel { call: 9 });
        for op in [
            WireControl::Start,
            WireControl::Stop,
            WireControl::Status,
            WireControl::Config,
            WireControl::Configure("{\"a\":1}".into()),
        ] {
            host_round_trip(HostMsg::Control { req: 3, op });
        }
        for result in [
            Err(WireError { kind: 404, message: "no such key".into() }),
            Ok(CbValue::Unit),
            Ok(CbValue::Bool(true)),
            Ok(CbValue::Value(None)),
            Ok(CbValue::Value(Some(vec![0, 1, 2]))),
            Ok(CbValue::Keys(vec!["a".into(), "b/c".into()])),
            Ok(CbValue::Reply(WireReply {
                status: 200,
                content_type: "text/plain".into(),
                body: b"hi".to_vec(),
            })),
        ] {
            host_round_trip(HostMsg::CbReply { req: 5, result });
        }
        host_round_trip(HostMsg::CbChunk { req: 5, data: vec![] });
        host_round_trip(HostMsg::Shutdown);
        host_round_trip(HostMsg::Credit { call: 3, chunks: STREAM_WINDOW });
    }

    #[test]
    fn every_child_message_round_trips() {
        child_round_trip(ChildMsg::HelloAck {
            version: PROTOCOL_VERSION,
            cookie: "x".into(),
            result: Ok(manifest()),
        });
        let mut bare = manifest();
        bare.route_prefix = None;
        bare.capabilities.clear();
        bare.routes.clear();
        child_round_trip(ChildMsg::HelloAck { version: 1, cookie: "x".into(), result: Ok(bare) });
        child_round_trip(ChildMsg::HelloAck {
            version: 1,
            cookie: String::new(),
            result: Err("cannot open library: nope".into()),
        });
        child_round_trip(ChildMsg::Created { result: Ok(()) });
        child_round_trip(ChildMsg::Created { result: Err("create: boom".into()) });
        child_round_trip(ChildMsg::Begin { call: 1, content_type: "text/event-stream".into() });
        child_round_trip(ChildMsg::Chunk { call: 1, data: b"data: x\n\n".to_vec() });
        child_round_trip(ChildMsg::Done {
            call: 1,
            result: Ok(WireReply {
                status: 201,
                content_type: String::new(),
                body: vec![7; 70_000],
            }),
        });
        child_round_trip(ChildMsg::Done {
            call: 2,
            result: Err(WireError { kind: 590, message: "panicked".into() }),
        });
        child_round_trip(ChildMsg::ControlDone { req: 1, result: Ok("{}".into()) });
        child_round_trip(ChildMsg::ControlDone {
            req: 1,
            result: Err(WireError { kind: 422, message: "bad config".into() }),
        });
        child_round_trip(ChildMsg::Log { level: 3, target: "t".into(), message: "m".into() });
        for op in [
            CbOp::Bus {
                plugin: "echo".into(),
                capability: "echo".into(),
                content_type: "application/json".into(),
                body: b"{}".to_vec(),
                stream: true,
            },
            CbOp::KvGet { key: "k".into() },
            CbOp::KvPut { key: "k".into(), value: vec![1, 2] },
            CbOp::KvDelete { key: "k".into() },
            CbOp::KvKeys { prefix: String::new() },
        ] {
            child_round_trip(ChildMsg::Callback { req: 11, call: 4, op });
        }
        child_round_trip(ChildMsg::CbCancel { req: 11 });
        child_round_trip(ChildMsg::CbCredit { req: 11, chunks: STREAM_WINDOW / 2 });
        child_round_trip(ChildMsg::Heap { bytes: Some(123_456) });
        child_round_trip(ChildMsg::Heap { bytes: None });
    }

    #[test]
    fn every_cut_of_a_frame_is_refused_as_truncated() {
        let frames = [
            HostMsg::Call(WireCall {
                call: 1,
                kind: 0,
                target: "echo".into(),
                method: "POST".into(),
                query: String::new(),
                content_type: "text/plain".into(),
                body: b"hello".to_vec(),
            })
            .encode(),
            HostMsg::CbReply { req: 1, result: Ok(CbValue::Keys(vec!["a".into()])) }.encode(),
        ];
        for frame in &frames {
            let payload = &frame[4..];
            for cut in 0..payload.len() {
                let err = HostMsg::decode(&payload[..cut]).unwrap_err();
                assert!(err.0.contains("truncated"), "cut at {cut}: {err}");
            }
        }
        let frame =
            ChildMsg::HelloAck { version: 1, cookie: "c".into(), result: Ok(manifest()) }.encode();
        let payload = &frame[4..];
        for cut in 0..payload.len() {
            let err = ChildMsg::decode(&payload[..cut]).unwrap_err();
            assert!(err.0.contains("truncated"), "cut at {cut}: {err}");
        }
    }

    #[test]
    fn garbage_gets_a_clear_error() {
        assert_eq!(
            HostMsg::decode(&[77]).unwrap_err().to_string(),
            "bad frame: unknown host message tag 77"
        );
        assert_eq!(
            ChildMsg::decode(&[3]).unwrap_err().to_string(),
            "bad frame: unknown child message tag 3"
        );
        // A trailing byte after a whole message.
        let mut frame = HostMsg::Cancel { call: 1 }.encode();
        frame.push(0);
        assert_eq!(
            HostMsg::decode(&frame[4..]).unwrap_err().0,
            "1 unexpected bytes after the message"
        );
        // A flag that is neither 0 nor 1.
        let mut frame = ChildMsg::Heap { bytes: None }.encode();
        frame[5] = 9;
        assert!(ChildMsg::decode(&frame[4..]).unwrap_err().0.contains("expected 0 or 1, got 9"));
        // Invalid UTF-8 in a string.
        let mut frame = HostMsg::Hello { version: 1, cookie: "ab".into() }.encode();
        let n = frame.len();
        frame[n - 1] = 0xff;
        assert_eq!(HostMsg::decode(&frame[4..]).unwrap_err().0, "cookie is not valid UTF-8");
        // A length that points past the end.
        let mut frame = ChildMsg::Chunk { call: 1, data: vec![1, 2, 3] }.encode();
        frame[13..17].copy_from_slice(&1000u32.to_le_bytes());
        let err = ChildMsg::decode(&frame[4..]).unwrap_err().0;
        assert!(err.contains("truncated: chunk needs 1000 bytes"), "{err}");
    }

    #[test]
    fn frames_are_read_back_one_by_one_and_a_cut_stream_is_an_error() {
        let mut stream = Vec::new();
        let a = HostMsg::Cancel { call: 1 };
        let b = HostMsg::CbChunk { req: 2, data: vec![9; 100_000] };
        write_frame(&mut stream, &a.encode()).unwrap();
        write_frame(&mut stream, &b.encode()).unwrap();
        let mut r = std::io::Cursor::new(stream.clone());
        assert_eq!(HostMsg::decode(&read_frame(&mut r).unwrap().unwrap()).unwrap(), a);
        assert_eq!(HostMsg::decode(&read_frame(&mut r).unwrap().unwrap()).unwrap(), b);
        assert!(read_frame(&mut r).unwrap().is_none(), "a clean end between frames");

        let mut cut = std::io::Cursor::new(stream[..stream.len() - 1].to_vec());
        read_frame(&mut cut).unwrap().unwrap();
        let err = read_frame(&mut cut).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
        assert!(err.to_string().contains("inside a frame"), "{err}");

        let mut short = std::io::Cursor::new(vec![1u8, 0]);
        let err = read_frame(&mut short).unwrap_err();
        assert!(err.to_string().contains("frame's length (2 of 4 bytes)"), "{err}");

        let mut huge = std::io::Cursor::new(u32::MAX.to_le_bytes().to_vec());
        let err = read_frame(&mut huge).unwrap_err();
        assert!(err.to_string().contains("over the limit"), "{err}");
    }
}
