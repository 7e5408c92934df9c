// Turns a JSON Schema (the subset plugin configs use) into form fields, and form values back
// into a config. Anything the form cannot express is edited as raw JSON.

export type FieldKind = 'string' | 'integer' | 'number' | 'boolean' | 'enum' | 'string-list' | 'json';

export interface FormField {
  /** JSON pointer of the value, e.g. `/server/port`. */
  path: string;
  label: string;
  kind: FieldKind;
  required: boolean;
  description?: string;
  options?: unknown[];
  min?: number;
  max?: number;
  maxLength?: number;
  minLength?: number;
  pattern?: string;
  secret?: boolean;
  /** The schema's `default`: shown for a value the stored config lacks (the plugin uses it). */
  default?: unknown;
}

type Schema = Record<string, unknown>;

function isObj(v: unknown): v is Record<string, unknown> {
  return !!v && typeof v === 'object' && !Array.isArray(v);
}

function typeOf(schema: Schema): string | undefined {
  const t = schema['type'];
  if (Array.isArray(t)) return t.find((x) => x !== 'null') as string | undefined;
  return t as string | undefined;
}

export function escapePointer(key: string): string {
  return key.replace(/~/g, '~0').replace(/\//g, '~1');
}

/** Flattens object properties (recursively) into fields. */
export function fieldsFromSchema(schema: unknown, base = '', required: string[] = []): FormField[] {
  if (!isObj(schema)) return [];
  const props = schema['properties'];
  if (typeOf(schema) !== 'object' && !isObj(props)) return [];
  if (!isObj(props)) return [];
  const req = Array.isArray(schema['required']) ? (schema['required'] as string[]) : required;
  const out: FormField[] = [];
  for (const [key, raw] of Object.entries(props)) {
    if (!isObj(raw)) continue;
    const path = `${base}/${escapePointer(key)}`;
    const t = typeOf(raw);
    const common = {
      path,
      label: (raw['title'] as string) ?? key,
      required: req.includes(key),
      description: raw['description'] as string | undefined,
      ...('default' in raw ? { default: raw['default'] } : {}),
    };
    if (Array.isArray(raw['enum'])) {
      out.push({ ...common, kind: 'enum', options: raw['enum'] as unknown[] });
    } else if (t === 'object' && isObj(raw['properties'])) {
      out.push(...fieldsFromSchema(raw, path));
    } else if (t === 'string') {
      out.push({
        ...common,
        kind: 'string',
        maxLength: raw['maxLength'] as number | undefined,
        minLength: raw['minLength'] as number | undefined,
        pattern: raw['pattern'] as string | undefined,
        secret: raw['format'] === 'password' || raw['writeOnly'] === true,
      });
    } else if (t === 'integer' || t === 'number') {
      out.push({ ...common, kind: t, min: raw['minimum'] as number | undefined, max: raw['maximum'] as number | undefined });
    } else if (t === 'boolean') {
      out.push({ ...common, kind: 'boolean' });
    } else if (t === 'array' && isObj(raw['items']) && typeOf(raw['items'] as Schema) === 'string') {
      out.push({ ...common, kind: 'string-list' });
    } else {
      out.push({ ...common, kind: 'json' });
    }
  }
  return out;
}

export function getPointer(value: unknown, path: string): unknown {
  if (path === '') return value;
  let cur: unknown = value;
  for (const part of path.slice(1).split('/')) {
    const key = part.replace(/~1/g, '/').replace(/~0/g, '~');
    if (!isObj(cur)) return undefined;
    cur = cur[key];
  }
  return cur;
}

export function setPointer(target: Record<string, unknown>, path: string, v: unknown): void {
  const parts = path
    .slice(1)
    .split('/')
    .map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
  let cur = target;
  for (const p of parts.slice(0, -1)) {
    if (!isObj(cur[p])) cur[p] = {};
    cur = cur[p] as Record<string, unknown>;
  }
  cur[parts[parts.length - 1]] = v;
}

/**
 * The value a field shows for a config: the stored one, or, where the config lacks it, the
 * schema's default (what the plugin runs with).
 */
export function shownValue(field: FormField, config: unknown): string | boolean {
  const v = getPointer(config, field.path);
  return toFormValue(field, v === undefined ? field.default : v);
}

/** The text/boolean shown in a field for a config value. */
export function toFormValue(field: FormField, v: unknown): string | boolean {
  switch (field.kind) {
    case 'boolean':
      return v === true;
    case 'string-list':
      return Array.isArray(v) ? v.join('\n') : '';
    case 'json':
      return v === undefined ? '' : JSON.stringify(v, null, 2);
    case 'enum':
      return v === undefined ? '' : JSON.stringify(v);
    default:
      return v == null ? '' : String(v);
  }
}

export interface BuildResult {
  value: Record<string, unknown>;
  /** Fields the browser could not even turn into a value (not a number, bad JSON). */
  errors: Record<string, string>;
}

/**
 * Builds the config object from the form. Starts from `base` (the current config) so keys the
 * form does not show are kept. Empty optional fields are left out, and so is a field the
 * config lacks whose form value is still the schema's default (shown, not chosen): the plugin
 * keeps following its default, and saving an untouched form sends the config as stored.
 */
export function buildConfig(fields: FormField[], form: Record<string, string | boolean>, base: unknown): BuildResult {
  const value: Record<string, unknown> = isObj(base) ? structuredClone(base) : {};
  const errors: Record<string, string> = {};
  for (const f of fields) {
    const raw = form[f.path];
    if (f.default !== undefined && getPointer(base, f.path) === undefined && raw === toFormValue(f, f.default)) continue;
    if (f.kind === 'boolean') {
      setPointer(value, f.path, raw === true);
      continue;
    }
    const text = typeof raw === 'string' ? raw : '';
    if (text.trim() === '' && f.kind !== 'string') {
      removePointer(value, f.path);
      continue;
    }
    switch (f.kind) {
      case 'string':
        if (text === '' && !f.required) removePointer(value, f.path);
        else setPointer(value, f.path, text);
        break;
      case 'integer':
      case 'number': {
        const n = Number(text);
        if (!isFinite(n) || (f.kind === 'integer' && !Number.isInteger(n))) {
          errors[f.path] = f.kind === 'integer' ? 'enter a whole number' : 'enter a number';
          setPointer(value, f.path, text);
        } else setPointer(value, f.path, n);
        break;
      }
      case 'string-list':
        setPointer(
          value,
          f.path,
          text.split('\n').map((s) => s.trim()).filter(Boolean),
        );
        break;
      case 'enum':
      case 'json':
        try {
          setPointer(value, f.path, JSON.parse(text));
        } catch {
          errors[f.path] = 'not valid JSON';
        }
        break;
    }
  }
  return { value, errors };
}

function removePointer(target: Record<string, unknown>, path: string) {
  const parts = path.slice(1).split('/');
  let cur: unknown = target;
  for (const p of parts.slice(0, -1)) {
    if (!isObj(cur)) return;
    cur = cur[p.replace(/~1/g, '/').replace(/~0/g, '~')];
  }
  if (isObj(cur)) delete cur[parts[parts.length - 1].replace(/~1/g, '/').replace(/~0/g, '~')];
}

/**
 * Assigns the server's validation errors (`[{path, message}]`) to fields. An error at a parent
 * path, or one naming a missing required property, goes to the field it names when it can;
 * the rest are form-level.
 */
export function assignErrors(
  fields: FormField[],
  errors: { path: string; message: string }[],
): { byField: Record<string, string[]>; general: string[] } {
  const byField: Record<string, string[]> = {};
  const general: string[] = [];
  const paths = new Set(fields.map((f) => f.path));
  for (const e of errors) {
    let path = e.path ?? '';
    if (!paths.has(path)) {
      // "\"greeting\" is a required property" / "Additional properties ... ('x' was unexpected)"
      const m = /^"([^"]+)" is a required property/.exec(e.message);
      if (m) path = `${path}/${escapePointer(m[1])}`;
    }
    // An error below a field (e.g. /list/0) belongs to the field.
    while (path && !paths.has(path)) path = path.slice(0, path.lastIndexOf('/'));
    if (path && paths.has(path)) (byField[path] ??= []).push(e.message);
    else general.push(e.path ? `${e.path}: ${e.message}` : e.message);
  }
  return { byField, general };
}
