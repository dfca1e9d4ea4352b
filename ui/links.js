// Link header parsing (RFC 8288), for discovery and the subscriptions API's cursor.

/** Parses Link header values (several headers arrive joined by ", "). */
export function parseLinks(value) {
  const links = [];
  if (!value) return links;
  let i = 0;
  const n = value.length;
  const skip = () => { while (i < n && /[\s,]/.test(value[i])) i++; };
  while (i < n) {
    skip();
    if (value[i] !== '<') break;
    const end = value.indexOf('>', i);
    if (end < 0) break;
    const link = { href: value.slice(i + 1, end), params: {} };
    i = end + 1;
    for (;;) {
      while (i < n && value[i] === ' ') i++;
      if (value[i] !== ';') break;
      i++;
      while (i < n && value[i] === ' ') i++;
      let name = '';
      while (i < n && !/[=;,\s]/.test(value[i])) name += value[i++];
      while (i < n && value[i] === ' ') i++;
      let v = '';
      if (value[i] === '=') {
        i++;
        while (i < n && value[i] === ' ') i++;
        if (value[i] === '"') {
          i++;
          while (i < n && value[i] !== '"') {
            if (value[i] === '\\') i++;
            v += value[i++] ?? '';
          }
          i++;
        } else {
          while (i < n && !/[;,\s]/.test(value[i])) v += value[i++];
        }
      }
      if (name) link.params[name.toLowerCase()] = v;
    }
    links.push(link);
  }
  return links;
}
