import { SseParser, chatDelta, cosine } from './sse';

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
