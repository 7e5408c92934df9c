import { SseParser, chatDelta, cosine, finishReason, modelsByKind, sseError } from './sse';

describe('SseParser', () => {
  it('assembles events split across chunks', () => {
    const p = new SseParser();
    expect(p.push('data: {"a":')).toEqual([]);
    expect(p.push('1}\n\ndata: [DONE]\r\n\r\n')).toEqual(['{"a":1}', '[DONE]']);
  });
  it('ignores comments and joins multi-line data', () => {
    const p = new SseParser();
    expect(p.push(': ping\n\ndata: a\ndata: b\n\n')).toEqual(['a\nb']);
  });
});

describe('chatDelta / cosine', () => {
  it('reads the delta of a chunk', () => {
    expect(chatDelta('{"choices":[{"delta":{"content":"Hi"}}]}')).toBe('Hi');
    expect(chatDelta('{"choices":[{"delta":{}}]}')).toBe('');
    expect(chatDelta('[DONE]')).toBe('');
    expect(chatDelta('nope')).toBe('');
  });
  it('computes cosine similarity', () => {
    expect(cosine([1, 0], [1, 0])).toBeCloseTo(1);
    expect(cosine([1, 0], [0, 1])).toBeCloseTo(0);
    expect(cosine([0, 0], [1, 1])).toBe(0);
  });
});

describe('stream errors, finish reasons, model kinds', () => {
  it('reads an in-stream error and the finish reason', () => {
    expect(sseError('{"error":{"message":"the model is gone","type":"server_error"}}')).toBe('the model is gone');
    expect(sseError('{"choices":[]}')).toBeNull();
    expect(sseError('[DONE]')).toBeNull();
    expect(finishReason('{"choices":[{"delta":{},"finish_reason":"length"}]}')).toBe('length');
    expect(finishReason('{"choices":[{"delta":{"content":"x"},"finish_reason":null}]}')).toBeNull();
  });
  it('splits /v1/models by kind', () => {
    expect(modelsByKind([{ id: 'SmolLM2-135M-Instruct', kind: 'chat' }, { id: 'all-MiniLM-L6-v2', kind: 'embedding' }, { id: 'x' }])).toEqual({
      chat: ['SmolLM2-135M-Instruct', 'x'],
      embedding: ['all-MiniLM-L6-v2'],
    });
  });
});
