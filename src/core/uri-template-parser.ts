/**
 * RFC 6570 §2 syntax: splits a URI template into literals and expressions, refusing anything
 * the grammar does not allow, so that the compiler in uri-template.ts only ever sees valid
 * operators, varspecs and literal characters.
 */

export type Operator = '' | '+' | '#' | '.' | '/' | ';' | '?' | '&';

export interface VarSpec {
  readonly name: string;
  readonly prefix: number | null;
  readonly explode: boolean;
}

export interface Expression {
  readonly op: Operator;
  readonly vars: readonly VarSpec[];
}

export type Part = { readonly literal: string } | { readonly expression: Expression };

const VARSPEC =
  /^((?:[A-Za-z0-9_]|%[0-9A-Fa-f]{2})(?:\.?(?:[A-Za-z0-9_]|%[0-9A-Fa-f]{2}))*)(?::([1-9][0-9]{0,3})|(\*))?$/;

export function parse(template: string): Part[] | null {
  const parts: Part[] = [];
  let literal = '';
  let i = 0;
  while (i < template.length) {
    const c = template[i] as string;
    if (c === '{') {
      const end = template.indexOf('}', i + 1);
      if (end < 0) return null;
      const expression = parseExpression(template.slice(i + 1, end));
      if (!expression) return null;
      if (literal) parts.push({ literal });
      literal = '';
      parts.push({ expression });
      i = end + 1;
    } else if (c === '%') {
      const triplet = template.slice(i, i + 3);
      if (!/^%[0-9A-Fa-f]{2}$/.test(triplet)) return null;
      literal += triplet;
      i += 3;
    } else {
      const cp = template.codePointAt(i) as number;
      if (!isLiteral(cp)) return null;
      const ch = String.fromCodePoint(cp);
      literal += ch;
      i += ch.length;
    }
  }
  if (literal) parts.push({ literal });
  return parts;
}

function parseExpression(body: string): Expression | null {
  let op: Operator = '';
  let list = body;
  const c = body[0];
  if (c === '+' || c === '#' || c === '.' || c === '/' || c === ';' || c === '?' || c === '&') {
    op = c;
    list = body.slice(1);
  }
  const vars: VarSpec[] = [];
  // Reserved operators (= , ! @ |), nested braces and empty names all fail the varspec grammar.
  for (const spec of list.split(',')) {
    const m = VARSPEC.exec(spec);
    if (!m) return null;
    vars.push({ name: m[1] as string, prefix: m[2] ? Number(m[2]) : null, explode: m[3] === '*' });
  }
  return { op, vars };
}

function isLiteral(cp: number): boolean {
  if (cp < 0x80) {
    return (
      cp === 0x21 ||
      cp === 0x23 ||
      cp === 0x24 ||
      cp === 0x26 ||
      (cp >= 0x28 && cp <= 0x3b) ||
      cp === 0x3d ||
      (cp >= 0x3f && cp <= 0x5b) ||
      cp === 0x5d ||
      cp === 0x5f ||
      (cp >= 0x61 && cp <= 0x7a) ||
      cp === 0x7e
    );
  }
  // ucschar / iprivate (RFC 3987); this excludes C1 controls, lone surrogates and noncharacters.
  if (cp >= 0xa0 && cp <= 0xd7ff) return true;
  if (cp >= 0xe000 && cp <= 0xfdcf) return true;
  if (cp >= 0xfdf0 && cp <= 0xffef) return true;
  if (cp >= 0x10000 && (cp & 0xffff) <= 0xfffd) return cp < 0xe0000 || cp >= 0xe1000;
  return false;
}

/**
 * Adjacent expressions whose operator puts the same separator before every value are one
 * expression: `{/a}{/b}` expands exactly like `{/a,b}`. Joining them lets the compiler's
 * subsequence logic decide the split instead of two optional groups competing for the same text.
 */
export function joinVarLists(parts: Part[]): Part[] {
  const out: Part[] = [];
  for (const part of parts) {
    const prev = out[out.length - 1];
    if (
      prev &&
      'expression' in prev &&
      'expression' in part &&
      prev.expression.op === part.expression.op &&
      (part.expression.op === '.' || part.expression.op === '/' || part.expression.op === ';' || part.expression.op === '&')
    ) {
      out[out.length - 1] = {
        expression: { op: part.expression.op, vars: [...prev.expression.vars, ...part.expression.vars] },
      };
    } else {
      out.push(part);
    }
  }
  return out;
}
