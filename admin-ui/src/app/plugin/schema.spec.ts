import { assignErrors, buildConfig, fieldsFromSchema, getPointer, shownValue, toFormValue } from './schema';

const echoSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['greeting'],
  properties: {
    greeting: { type: 'string', maxLength: 20 },
    repeat: { type: 'integer', minimum: 1, maximum: 5 },
  },
};

const rich = {
  type: 'object',
  properties: {
    mode: { enum: ['fast', 'slow'] },
    enabled: { type: 'boolean' },
    tags: { type: 'array', items: { type: 'string' } },
    server: { type: 'object', required: ['port'], properties: { port: { type: 'integer' }, 'a/b': { type: 'string' } } },
    extra: { type: 'object' },
    ratio: { type: ['number', 'null'] },
  },
};

describe('fieldsFromSchema', () => {
  it('maps the echo schema', () => {
    const f = fieldsFromSchema(echoSchema);
    expect(f.map((x) => [x.path, x.kind, x.required])).toEqual([
      ['/greeting', 'string', true],
      ['/repeat', 'integer', false],
    ]);
    expect(f[0].maxLength).toBe(20);
    expect(f[1].min).toBe(1);
  });
  it('flattens nested objects and picks widgets', () => {
    const f = fieldsFromSchema(rich);
    expect(Object.fromEntries(f.map((x) => [x.path, x.kind]))).toEqual({
      '/mode': 'enum',
      '/enabled': 'boolean',
      '/tags': 'string-list',
      '/server/port': 'integer',
      '/server/a~1b': 'string',
      '/extra': 'json',
      '/ratio': 'number',
    });
    expect(f.find((x) => x.path === '/server/port')?.required).toBe(true);
  });
  it('gives nothing for a missing schema', () => {
    expect(fieldsFromSchema(null)).toEqual([]);
  });
});

describe('buildConfig', () => {
  const fields = fieldsFromSchema(rich);
  it('round-trips a config through the form', () => {
    const config = { mode: 'slow', enabled: true, tags: ['a', 'b'], server: { port: 80, 'a/b': 'x' }, extra: { k: 1 }, ratio: 0.5, keep: 1 };
    const form = Object.fromEntries(fields.map((f) => [f.path, toFormValue(f, getPointer(config, f.path))]));
    const { value, errors } = buildConfig(fields, form, config);
    expect(errors).toEqual({});
    expect(value).toEqual(config);
  });
  it('reports values the browser cannot convert and drops empty optional fields', () => {
    const form = { '/server/port': '8.5', '/ratio': '', '/extra': '{bad', '/enabled': false };
    const { value, errors } = buildConfig(fields, form, { ratio: 1 });
    expect(errors['/server/port']).toMatch(/whole number/);
    expect(errors['/extra']).toMatch(/JSON/);
    expect('ratio' in value).toBe(false);
    expect(value['enabled']).toBe(false);
  });
});

describe('schema defaults', () => {
  const schema = {
    type: 'object',
    properties: {
      embed_batch_size: { type: 'integer', default: 32 },
      mode: { enum: ['fast', 'slow'], default: 'fast' },
      verbose: { type: 'boolean', default: true },
      name: { type: 'string' },
    },
  };
  const fields = fieldsFromSchema(schema);
  const form = (config: unknown) => Object.fromEntries(fields.map((f) => [f.path, shownValue(f, config)]));

  it('fields carry the default; a value the config lacks shows it, a stored one wins', () => {
    expect(fields.map((f) => f.default)).toEqual([32, 'fast', true, undefined]);
    expect(form({})).toEqual({ '/embed_batch_size': '32', '/mode': '"fast"', '/verbose': true, '/name': '' });
    expect(form({ embed_batch_size: 8, verbose: false })['/embed_batch_size']).toBe('8');
    expect(form({ embed_batch_size: 8, verbose: false })['/verbose']).toBe(false);
  });
  it('untouched defaults stay out of the saved config; changed ones and stored ones go in', () => {
    expect(buildConfig(fields, form({ keep: 1 }), { keep: 1 }).value).toEqual({ keep: 1 });
    const changed = { ...form({}), '/embed_batch_size': '64', '/verbose': false };
    expect(buildConfig(fields, changed, {}).value).toEqual({ embed_batch_size: 64, verbose: false });
    // A stored value equal to the default is kept as stored.
    expect(buildConfig(fields, form({ embed_batch_size: 32 }), { embed_batch_size: 32 }).value).toEqual({ embed_batch_size: 32 });
  });
});

describe('assignErrors', () => {
  const fields = fieldsFromSchema(rich);
  it('puts errors on their field, nested paths on the parent field, others in general', () => {
    const r = assignErrors(fields, [
      { path: '/server/port', message: 'not an integer' },
      { path: '/tags/1', message: 'not a string' },
      { path: '/server', message: '"port" is a required property' },
      { path: '', message: 'Additional properties are not allowed' },
    ]);
    expect(r.byField['/server/port']).toEqual(['not an integer', '"port" is a required property']);
    expect(r.byField['/tags']).toEqual(['not a string']);
    expect(r.general).toEqual(['Additional properties are not allowed']);
  });
});
