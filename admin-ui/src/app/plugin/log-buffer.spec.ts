import { LogLine } from '../core/models';
import { LogBuffer, filterLines, formatLogLine } from './log-buffer';

const line = (seq: number, message = `m${seq}`): LogLine => ({ seq, at_ms: 0, level: 'info', source: 'plugin', target: '', message });

describe('LogBuffer', () => {
  it('keeps lines in order, bounded, without duplicates', () => {
    const b = new LogBuffer(3);
    for (const s of [1, 2, 2, 3, 4, 1]) b.push(line(s));
    expect(b.lines.map((l) => l.seq)).toEqual([2, 3, 4]);
  });
  it('counts dropped lines and ignores junk', () => {
    const b = new LogBuffer();
    expect(b.push({ dropped: 5 })).toBe(true);
    expect(b.push({ hello: 1 })).toBe(false);
    expect(b.push(null)).toBe(false);
    expect(b.dropped).toBe(5);
  });
  it('holds lines while paused and releases them on resume', () => {
    const b = new LogBuffer();
    b.push(line(1));
    b.setPaused(true);
    b.push(line(2));
    b.push(line(3));
    expect(b.lines.length).toBe(1);
    expect(b.held.length).toBe(2);
    b.setPaused(false);
    expect(b.lines.map((l) => l.seq)).toEqual([1, 2, 3]);
    expect(b.held).toEqual([]);
  });
});

describe('filterLines / formatLogLine', () => {
  it('searches message and target case-insensitively', () => {
    const lines = [line(1, 'Hello world'), { ...line(2, 'x'), target: 'net::http' }, line(3, 'bye')];
    expect(filterLines(lines, 'HELLO').map((l) => l.seq)).toEqual([1]);
    expect(filterLines(lines, 'http').map((l) => l.seq)).toEqual([2]);
    expect(filterLines(lines, '  ')).toBe(lines);
  });
  it('formats a line for download', () => {
    expect(formatLogLine({ ...line(1, 'hi'), target: 't' })).toBe('1970-01-01T00:00:00.000Z INFO  [plugin:t] hi');
  });
});
