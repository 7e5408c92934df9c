//! Request images: how they arrive ([`ImageRequest::parse`]: the raw body with an `image/*`
//! Content-Type, options in the query string; or JSON `{"image": "<base64>", ...options}`) and
//! how they are decoded ([`decode`]: JPEG, PNG, WebP or BMP, the EXIF orientation applied, the
//! decoded size checked against `max_pixels` from the header before anything is decoded).
//!
//! Every refusal names the problem: 400 for a body that is not an image, a truncated or damaged
//! one, an image under 2x2 pixels, bad base64; 413 (`payload_too_large`) for one over the pixel
//! limit, naming `max_pixels`, its value and the config key that raises it.

use std::borrow::Cow;
use std::io::Cursor;

use base64::Engine as _;
use bkg_abi::serde_json::{self, Map, Value};
use bkg_abi::{Error, ErrorKind};
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};
use serde::de::DeserializeOwned;

/// HTTP 413 (`payload_too_large`): the decoded image would be larger than `max_pixels`.
pub const TOO_LARGE: ErrorKind = ErrorKind::PAYLOAD_TOO_LARGE;

/// A decoded image: `height` rows of `width` RGB pixels (HWC, u8).
#[derive(Clone, Debug, PartialEq)]
pub struct Rgb {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

impl Rgb {
    /// The pixel at column `x`, row `y`.
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let at = (y as usize * self.width as usize + x as usize) * 3;
        [self.data[at], self.data[at + 1], self.data[at + 2]]
    }

    /// A sub-image (clamped to the image; at least 1x1).
    pub fn crop(&self, x: u32, y: u32, w: u32, h: u32) -> Rgb {
        let x = x.min(self.width - 1);
        let y = y.min(self.height - 1);
        let w = w.clamp(1, self.width - x);
        let h = h.clamp(1, self.height - y);
        let mut data = Vec::with_capacity((w * h * 3) as usize);
        for row in y..y + h {
            let at = (row as usize * self.width as usize + x as usize) * 3;
            data.extend_from_slice(&self.data[at..at + w as usize * 3]);
        }
        Rgb { width: w, height: h, data }
    }
}

const FORMATS: &str = "JPEG, PNG, WebP or BMP";

fn format_of_content_type(content_type: &str) -> Result<Option<ImageFormat>, Error> {
    let mime = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    Ok(match mime.as_str() {
        "image/jpeg" | "image/jpg" => Some(ImageFormat::Jpeg),
        "image/png" => Some(ImageFormat::Png),
        "image/webp" => Some(ImageFormat::WebP),
        "image/bmp" | "image/x-ms-bmp" => Some(ImageFormat::Bmp),
        "" | "application/octet-stream" => None,
        m if m.starts_with("image/") => {
            return Err(Error::bad_request(format!("unsupported image type '{m}': send {FORMATS}")))
        }
        _ => None,
    })
}

/// Decode an image of any supported format (told by its bytes; `content_type` only refuses
/// unsupported `image/*` types), apply its EXIF orientation, and return it as RGB.
pub fn decode(bytes: &[u8], content_type: Option<&str>, max_pixels: u64) -> Result<Rgb, Error> {
    if let Some(ct) = content_type {
        format_of_content_type(ct)?;
    }
    if bytes.is_empty() {
        return Err(Error::bad_request("the image is empty (0 bytes)"));
    }
    let format = image::guess_format(bytes)
        .ok()
        .filter(|f| {
            matches!(f, ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP | ImageFormat::Bmp)
        })
        .ok_or_else(|| {
            Error::bad_request(format!("the body is not an image: expected {FORMATS}"))
        })?;
    let name = format!("{format:?}").to_uppercase();
    if format == ImageFormat::Jpeg && !jpeg_is_complete(bytes) {
        return Err(Error::bad_request(
            "the JPEG image is truncated: no end-of-image marker after its last scan",
        ));
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    reader.no_limits(); // the pixel limit below is ours; allocation follows from it
    let mut decoder = reader.into_decoder().map_err(|e| {
        Error::bad_request(format!("the {name} image cannot be read (damaged header?): {e}"))
    })?;
    let (width, height) = decoder.dimensions();
    let pixels = width as u64 * height as u64;
    if pixels > max_pixels {
        return Err(Error::payload_too_large(format!(
            "the image is {width}x{height} = {pixels} pixels, over max_pixels = {max_pixels} \
             (checked from its header, nothing decoded); raise the plugin's config key \
             max_pixels (POST /api/core/plugins/rustyface/config {{\"max_pixels\": ...}}) to \
             accept it"
        )));
    }
    if width < 2 || height < 2 {
        return Err(Error::bad_request(format!(
            "the image is {width}x{height} pixels: too small to hold a face (at least 2x2)"
        )));
    }
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| {
        Error::bad_request(format!(
            "the {name} image cannot be decoded (truncated or damaged): {e}"
        ))
    })?;
    img.apply_orientation(orientation);
    let rgb = img.into_rgb8();
    Ok(Rgb { width: rgb.width(), height: rgb.height(), data: rgb.into_raw() })
}

/// Whether a JPEG stream ends its last scan with an end-of-image marker (`FF D9`). The decoder
/// fills a truncated scan with grey rather than failing; entropy-coded data never holds
/// `FF DA` or `FF D9` (an `FF` there is stuffed with `00`), and an EXIF thumbnail's own EOI
/// comes before the main image's scans.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last = |marker: u8| bytes.windows(2).rposition(|w| w[0] == 0xff && w[1] == marker);
    matches!((last(0xda), last(0xd9)), (Some(sos), Some(eoi)) if eoi > sos)
}

/// Whether a body is JSON: `application/json`, or a body starting with `{` under any type but
/// `image/*` (no image format starts with `{`; `curl -d` sends JSON as form data by default).
fn is_json(mime: &str, body: &[u8]) -> bool {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    mime == "application/json" || (!mime.starts_with("image/") && first == Some(&b'{'))
}

/// An image request: the image's bytes, the Content-Type they came with (raw bodies), and the
/// capability's options.
#[derive(Debug)]
pub struct ImageRequest<'a, T> {
    pub bytes: Cow<'a, [u8]>,
    pub content_type: Option<String>,
    pub options: T,
}

/// How to send an image, for error messages.
pub const HOW: &str = "send the image as the raw body (Content-Type: image/jpeg, image/png, \
                       image/webp or image/bmp; options in the query string) or as JSON \
                       {\"image\": \"<base64>\", ...options}";

/// Decode base64 (standard or URL-safe, padded or not; a `data:...;base64,` prefix is
/// skipped). `field` names the JSON field in errors.
pub fn base64_bytes(field: &str, text: &str) -> Result<Vec<u8>, Error> {
    let text = match text.find(";base64,") {
        Some(i) if text.starts_with("data:") => &text[i + 8..],
        _ => text,
    };
    let clean: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let clean = clean.trim_end_matches('=');
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(clean)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(clean))
        .map_err(|e| Error::bad_request(format!("'{field}' is not valid base64: {e}")))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Query-string options: `a=1&b=true&c=ssd` -> `{"a": 1, "b": true, "c": "ssd"}` (values that
/// parse as JSON are taken as JSON, others as strings).
pub fn query_options(query: &str) -> Map<String, Value> {
    let mut map = Map::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, "true"));
        let v = percent_decode(v);
        let value = serde_json::from_str(&v).unwrap_or(Value::String(v));
        map.insert(percent_decode(k), value);
    }
    map
}

fn options<T: DeserializeOwned>(map: Map<String, Value>) -> Result<T, Error> {
    serde_json::from_value(Value::Object(map))
        .map_err(|e| Error::bad_request(format!("bad options: {e}")))
}

impl<'a, T: DeserializeOwned> ImageRequest<'a, T> {
    /// Read a request: a raw image body (any `image/*` or `application/octet-stream`
    /// Content-Type, or bytes that are not JSON) with options from `query`, or JSON with the
    /// base64 image in `"image"` and the options beside it.
    pub fn parse(content_type: &str, query: &str, body: &'a [u8]) -> Result<Self, Error> {
        let mime = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        let json = is_json(&mime, body);
        if !json {
            if body.is_empty() {
                return Err(Error::bad_request(format!("no image: {HOW}")));
            }
            format_of_content_type(&mime)?;
            return Ok(ImageRequest {
                bytes: Cow::Borrowed(body),
                content_type: (!mime.is_empty()).then_some(mime),
                options: options(query_options(query))?,
            });
        }
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| Error::bad_request(format!("the body is not valid JSON: {e}; {HOW}")))?;
        let Value::Object(mut map) = value else {
            return Err(Error::bad_request(format!("the JSON body is not an object; {HOW}")));
        };
        let bytes = match map.remove("image") {
            Some(Value::String(s)) => base64_bytes("image", &s)?,
            Some(_) => return Err(Error::bad_request("'image' must be a base64 string")),
            None => return Err(Error::bad_request(format!("no 'image' in the JSON body; {HOW}"))),
        };
        Ok(ImageRequest { bytes: Cow::Owned(bytes), content_type: None, options: options(map)? })
    }
}

/// A batch request: JSON `{"images": ["<base64>", ...], ...options}`. Each image is its bytes
/// or the error that image alone would get (bad base64, not a string); the options are shared.
#[derive(Debug)]
pub struct Batch {
    pub images: Vec<Result<Vec<u8>, Error>>,
    pub options: Map<String, Value>,
}

impl Batch {
    /// `None` unless the body is a JSON object with an `images` key (then the request is a
    /// batch; a base64 string never holds a `"`, so bodies without `"images"` are not parsed).
    /// 400 for an empty batch, one over `max` images, `images` not an array, or `image` too.
    pub fn parse(content_type: &str, body: &[u8], max: usize) -> Result<Option<Batch>, Error> {
        let mime = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        let json = is_json(&mime, body);
        if !json || !body.windows(8).any(|w| w == b"\"images\"") {
            return Ok(None);
        }
        let Ok(Value::Object(mut map)) = serde_json::from_slice::<Value>(body) else {
            return Ok(None); // ImageRequest::parse names the problem
        };
        let Some(images) = map.remove("images") else { return Ok(None) };
        if map.contains_key("image") {
            return Err(Error::bad_request("send either 'image' or 'images', not both"));
        }
        let Value::Array(images) = images else {
            return Err(Error::bad_request("'images' must be an array of base64 strings"));
        };
        if images.is_empty() || images.len() > max {
            return Err(Error::bad_request(format!(
                "'images' must hold 1 to {max} images, got {}",
                images.len()
            )));
        }
        let images = images
            .into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => base64_bytes(&format!("images[{i}]"), &s),
                v => Err(Error::bad_request(format!(
                    "'images[{i}]' must be a base64 string, got {}",
                    kind_of(&v)
                ))),
            })
            .collect();
        Ok(Some(Batch { images, options: map }))
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn photos() -> Option<PathBuf> {
        let dir = crate::default_models_dir().join("test-images/face_recognition");
        dir.join("obama.jpg").is_file().then_some(dir)
    }

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn decodes_png_and_refuses_what_is_not_an_image() {
        let rgb = decode(&png(5, 3), Some("image/png"), 100).unwrap();
        assert_eq!((rgb.width, rgb.height), (5, 3));
        assert_eq!(rgb.pixel(4, 2), [4, 2, 7]);
        let e = decode(b"hello, not an image", None, 100).unwrap_err();
        assert_eq!(e.kind, ErrorKind::BAD_REQUEST);
        assert!(e.message.contains("not an image"), "{}", e.message);
        let e = decode(&png(5, 3), Some("image/gif"), 100).unwrap_err();
        assert!(e.message.contains("image/gif"), "{}", e.message);
    }

    #[test]
    fn one_by_one_and_zero_sized_images_are_refused() {
        let e = decode(&png(1, 1), None, 100).unwrap_err();
        assert_eq!(e.kind, ErrorKind::BAD_REQUEST);
        assert!(e.message.contains("1x1"), "{}", e.message);
        // A BMP header claiming 0x0.
        let mut bmp = Cursor::new(Vec::new());
        image::RgbImage::new(2, 2).write_to(&mut bmp, ImageFormat::Bmp).unwrap();
        let mut bmp = bmp.into_inner();
        bmp[18..26].copy_from_slice(&[0; 8]);
        let e = decode(&bmp, None, 100).unwrap_err();
        assert_eq!(e.kind, ErrorKind::BAD_REQUEST, "{}", e.message);
    }

    #[test]
    fn the_pixel_limit_is_checked_from_the_header_and_named() {
        let e = decode(&png(20, 10), None, 199).unwrap_err();
        assert_eq!(e.kind, TOO_LARGE);
        assert!(e.message.contains("20x10") && e.message.contains("199"), "{}", e.message);
        assert!(e.message.contains("max_pixels = 199"), "names the limit: {}", e.message);
        assert_eq!(e.kind.code(), "payload_too_large");
        // A PNG whose header claims 100000 x 100000 pixels (with a fixed-up CRC) and no data:
        // refused by the limit, never decoded.
        let mut huge = png(2, 2);
        huge[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        huge[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        let crc = crc32(&huge[12..29]);
        huge[29..33].copy_from_slice(&crc.to_be_bytes());
        let e = decode(&huge, None, 40_000_000).unwrap_err();
        assert_eq!(e.kind, TOO_LARGE, "{}", e.message);
        assert!(e.message.contains("40000000"), "{}", e.message);
    }

    pub(crate) fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &b in data {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }

    #[test]
    fn a_truncated_jpeg_is_refused() {
        let Some(dir) = photos() else { return eprintln!("skipped: no test photos") };
        let bytes = std::fs::read(dir.join("obama.jpg")).unwrap();
        let whole = decode(&bytes, Some("image/jpeg"), 40_000_000).unwrap();
        assert!(whole.width > 100 && whole.height > 100);
        let Err(e) = decode(&bytes[..bytes.len() / 2], Some("image/jpeg"), 40_000_000) else {
            panic!("a truncated JPEG was decoded");
        };
        assert_eq!(e.kind, ErrorKind::BAD_REQUEST);
        assert!(e.message.contains("truncated"), "{}", e.message);
    }

    #[test]
    fn exif_orientation_is_applied() {
        // A 4x2 JPEG with an EXIF block saying "rotate 90 degrees clockwise" (orientation 6)
        // decodes as 2x4.
        let img = image::RgbImage::from_fn(4, 2, |x, _| image::Rgb([x as u8 * 60, 0, 0]));
        let mut jpeg = Cursor::new(Vec::new());
        img.write_to(&mut jpeg, ImageFormat::Jpeg).unwrap();
        let jpeg = jpeg.into_inner();
        // APP1 "Exif\0\0" + a little-endian TIFF with one IFD entry: Orientation (0x0112) = 6.
        let mut tiff = vec![b'I', b'I', 42, 0, 8, 0, 0, 0, 1, 0];
        tiff.extend_from_slice(&[0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0]);
        tiff.extend_from_slice(&[0, 0, 0, 0]);
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend_from_slice(&tiff);
        let len = (app1.len() + 2) as u16;
        let mut out = jpeg[..2].to_vec();
        out.extend_from_slice(&[0xff, 0xe1]);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&app1);
        out.extend_from_slice(&jpeg[2..]);
        let rgb = decode(&out, Some("image/jpeg"), 100).unwrap();
        assert_eq!((rgb.width, rgb.height), (2, 4));
        let plain = decode(&jpeg, None, 100).unwrap();
        assert_eq!((plain.width, plain.height), (4, 2));
    }

    #[test]
    fn a_batch_keeps_each_images_own_error_and_refuses_what_is_not_a_batch() {
        let b64 = base64::engine::general_purpose::STANDARD.encode(png(3, 3));
        let body = format!("{{\"images\": [\"{b64}\", \"@@\", 7], \"max_faces\": 2}}");
        let b = Batch::parse("application/json", body.as_bytes(), 64).unwrap().unwrap();
        assert_eq!(b.images.len(), 3);
        assert_eq!(b.images[0].as_ref().unwrap(), &png(3, 3));
        assert!(b.images[1].as_ref().unwrap_err().message.contains("'images[1]'"));
        assert!(b.images[2].as_ref().unwrap_err().message.contains("a number"));
        assert_eq!(b.options.get("max_faces"), Some(&Value::from(2)));
        let single = format!("{{\"image\": \"{b64}\"}}");
        assert!(Batch::parse("application/json", single.as_bytes(), 64).unwrap().is_none());
        assert!(Batch::parse("image/png", &png(3, 3), 64).unwrap().is_none());
        for (body, needle) in [
            (r#"{"images": []}"#.to_string(), "1 to 64 images, got 0"),
            (format!("{{\"images\": [\"{b64}\", \"{b64}\"]}}"), "1 to 1 images, got 2"),
            (r#"{"images": "x"}"#.to_string(), "must be an array"),
            (format!("{{\"images\": [\"{b64}\"], \"image\": \"{b64}\"}}"), "not both"),
        ] {
            let max = if needle.contains("1 to 1") { 1 } else { 64 };
            let e = Batch::parse("application/json", body.as_bytes(), max).unwrap_err();
            assert!(e.message.contains(needle), "{body}: {}", e.message);
        }
    }

    #[derive(serde::Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Opts {
        #[serde(default)]
        aligned: bool,
    }

    #[test]
    fn json_sent_as_curls_default_form_content_type_is_read_as_json() {
        let raw = png(3, 3);
        let b64 = base64::engine::general_purpose::STANDARD.encode(&raw);
        let form = "application/x-www-form-urlencoded";
        let body = format!("{{\"image\": \"{b64}\", \"aligned\": true}}");
        let r: ImageRequest<Opts> = ImageRequest::parse(form, "", body.as_bytes()).unwrap();
        assert_eq!(r.bytes.as_ref(), &raw[..]);
        assert!(r.options.aligned);
        let batch = format!("{{\"images\": [\"{b64}\"]}}");
        let b = Batch::parse(form, batch.as_bytes(), 64).unwrap().expect("a batch");
        assert_eq!(b.images[0].as_ref().unwrap(), &raw);
        // Not under an image type: that is the raw image, refused as one.
        let e = decode(body.as_bytes(), Some("image/png"), 100).unwrap_err();
        assert!(e.message.contains("not an image"), "{}", e.message);
        assert!(ImageRequest::<Opts>::parse("image/png", "", body.as_bytes()).is_ok());
    }

    #[test]
    fn requests_come_raw_or_as_base64_json() {
        let raw = png(3, 3);
        let r: ImageRequest<Opts> = ImageRequest::parse("image/png", "aligned=true", &raw).unwrap();
        assert_eq!(r.bytes.as_ref(), &raw[..]);
        assert!(r.options.aligned);
        let b64 = base64::engine::general_purpose::STANDARD.encode(&raw);
        let body = format!("{{\"image\": \"{b64}\", \"aligned\": false}}");
        let r: ImageRequest<Opts> =
            ImageRequest::parse("application/json", "", body.as_bytes()).unwrap();
        assert_eq!(r.bytes.as_ref(), &raw[..]);
        assert!(!r.options.aligned);
        let e = ImageRequest::<Opts>::parse("application/json", "", b"{\"aligned\": true}")
            .unwrap_err();
        assert!(e.message.contains("no 'image'"), "{}", e.message);
        let e = ImageRequest::<Opts>::parse("application/json", "", b"{\"image\": \"@@@\"}")
            .unwrap_err();
        assert!(e.message.contains("base64"), "{}", e.message);
        let e = ImageRequest::<Opts>::parse("image/png", "bogus=1", &raw).unwrap_err();
        assert!(e.message.contains("bogus"), "{}", e.message);
    }
}
