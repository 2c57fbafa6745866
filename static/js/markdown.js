// Markdown for the live portrait: the same HTML as the server (app/articles/render.py), rendered
// incrementally while the text streams in.
//
// Needs the vendored markdown-it 14.1.0 (static/vendor/markdown-it-14.1.0.min.js), loaded first as a
// classic script: it defines the global `markdownit`.
//
//   const renderer = new IncrementalRenderer(element);
//   renderer.append(delta);   // per streamed piece: cheap, the DOM is updated once per animation frame
//   renderer.finish();        // at the end: one full render, exactly the server's HTML
//
// Also exported: createMarkdown() (a markdown-it configured like the server), repairTail(src) (what the
// unfinished end of the text is rendered as), isAllowedLink(url), isSameSiteImage(src).

const ALLOWED_SCHEMES = ["http:", "https:", "mailto:"];
const EXTERNAL_LINK_REL = "nofollow noopener noreferrer";
const IMAGE_ALT_CLASS = "image-alt";
const ALIGNMENTS = new Set(["left", "center", "right"]);
// Same patterns as render.py's _SUSPICIOUS and _FIRST_SEGMENT.
const SUSPICIOUS = /[\x00-\x20\x7f-\x9f\\]|&#/;
const FIRST_SEGMENT = /^[^/?#]*/;

/**
 * The link policy (render.py `is_allowed_link`): http(s), mailto and relative URLs only.
 * @param {string} url a URL as markdown-it normalized it
 * @returns {boolean}
 */
export function isAllowedLink(url) {
  if (SUSPICIOUS.test(url)) return false;
  const lower = url.toLowerCase();
  if (ALLOWED_SCHEMES.some((scheme) => lower.startsWith(scheme))) return true;
  if (url.startsWith("//")) return false;
  return !FIRST_SEGMENT.exec(url)[0].includes(":");
}

/**
 * Images load only from this site (render.py `is_same_site_image`).
 * @param {string} src
 * @returns {boolean}
 */
export function isSameSiteImage(src) {
  return src.startsWith("/") && !src.startsWith("//") && isAllowedLink(src);
}

/**
 * An image's alt text, as markdown-it-py's renderInlineAsText computes it. (markdown-it JS 14.1.0
 * drops `code_inline` here; the Python port keeps its content, and the server is the reference.)
 * @param {Array<object>} tokens inline tokens
 * @returns {string}
 */
function inlineText(tokens) {
  let out = "";
  for (const token of tokens) {
    switch (token.type) {
      case "text":
      case "code_inline":
      case "html_inline":
      case "html_block":
        out += token.content;
        break;
      case "image":
        if (token.children) out += inlineText(token.children);
        break;
      case "softbreak":
      case "hardbreak":
        out += "\n";
        break;
    }
  }
  return out;
}

/**
 * Where markdown-it 14.1.0 (JS) and markdown-it-py (the same version, ported) still differ, do as the
 * server does.
 * @param {object} md a markdown-it instance
 */
function matchPythonPort(md) {
  // 1. Named entities: JS decodes a legacy prefix ("&notit;" -> "¬it;"); the Python port, like the
  //    CommonMark spec, only decodes complete names ("&notit;" stays text). A complete decode never
  //    leaves a ";" behind (only &semi; decodes to one), a prefix decode always does.
  const entity = md.inline.ruler.__rules__.find((rule) => rule.name === "entity").fn;
  md.inline.ruler.at("entity", (state, silent) => {
    if (!entity(state, silent)) return false;
    const token = state.tokens[state.tokens.length - 1];
    if (!silent && token?.info === "entity" && token.markup[1] !== "#") {
      if (token.content.endsWith(";") && token.markup !== "&semi;") token.content = token.markup;
    }
    return true;
  });

  // 2. IPv6 hosts: the Python port encodes the URL's parts before format() adds the host's brackets
  //    ("http://[::1]/"); JS encodes after, turning the brackets into %5B and %5D.
  const { mdurl } = md.utils.lib;
  const normalizeLink = md.normalizeLink.bind(md);
  md.normalizeLink = (url) => {
    if (!url.includes("[")) return normalizeLink(url); // an IPv6 host is written in brackets
    const parsed = mdurl.parse(url, true);
    if (!parsed.hostname || !parsed.hostname.includes(":")) return normalizeLink(url);
    for (const part of ["protocol", "auth", "hostname", "pathname", "search", "hash"]) {
      if (parsed[part]) parsed[part] = mdurl.encode(parsed[part]);
    }
    return mdurl.format(parsed);
  };
}

/**
 * A markdown-it instance configured exactly like the server's (see MARKDOWN_OPTIONS in
 * app/articles/render.py): CommonMark plus tables and strikethrough, no raw HTML, the link policy,
 * same-site images only, rel on http(s) links, and table alignment as a class.
 * @returns {object} a markdown-it instance
 */
export function createMarkdown() {
  const md = globalThis.markdownit("commonmark", { html: false, linkify: false, typographer: false });
  md.enable(["table", "strikethrough"]);
  md.validateLink = isAllowedLink;
  matchPythonPort(md);
  const escapeHtml = md.utils.escapeHtml;
  const rules = md.renderer.rules;

  rules.image = (tokens, idx, options, env, self) => {
    const token = tokens[idx];
    const alt = token.children ? inlineText(token.children) : "";
    const src = token.attrGet("src");
    if (typeof src === "string" && isSameSiteImage(src)) {
      token.attrSet("alt", alt);
      return self.renderToken(tokens, idx, options);
    }
    return `<span class="${IMAGE_ALT_CLASS}">${escapeHtml(alt)}</span>`;
  };

  rules.link_open = (tokens, idx, options, env, self) => {
    const token = tokens[idx];
    const href = token.attrGet("href");
    if (typeof href === "string" && /^https?:/i.test(href)) token.attrSet("rel", EXTERNAL_LINK_REL);
    return self.renderToken(tokens, idx, options);
  };

  rules.th_open = rules.td_open = (tokens, idx, options, env, self) => {
    const token = tokens[idx];
    const index = token.attrIndex("style");
    if (index >= 0) {
      const [, style] = token.attrs.splice(index, 1)[0];
      const align = style.startsWith("text-align:") ? style.slice("text-align:".length) : style;
      if (ALIGNMENTS.has(align)) token.attrJoin("class", `align-${align}`);
    }
    return self.renderToken(tokens, idx, options);
  };

  // Unreachable with html: false; kept so a configuration slip can never emit raw HTML.
  rules.html_block = rules.html_inline = (tokens, idx) => escapeHtml(tokens[idx].content);
  return md;
}

// --- repairing the unfinished tail --------------------------------------------------------------

// A line's blockquote markers; then its indentation and list markers.
const QUOTES = /^(?:[ \t]{0,3}>[ \t]?)*/;
const INDENT_AND_MARKERS = /^([ \t]*)((?:(?:[-+*]|\d{1,9}[.)])(?:[ \t]+|$))*)/;
const FENCE_OPEN = /^(`{3,}|~{3,})(.*)$/;
const FENCE_CLOSE = /^ {0,3}(`{3,}|~{3,})[ \t]*$/;
const FENCE_PARTIAL = /^ {0,3}(`+|~+)[ \t]*$/;
// Starts a new block, so emphasis of earlier lines cannot continue into it.
const BLOCK_START = /^(?:#{1,6}(?:[ \t]|$)|\|)/;
const HEADING = /^#{1,6}(?:[ \t]|$)/;
// Not indented enough for the list item before it, and not a paragraph's lazy continuation either.
const LIST_ENDS = /^(?:[-*_](?:[ \t]*[-*_]){2,}[ \t]*$|#{1,6}(?:[ \t]|$)|>|`{3,}|~{3,})/;
const WHITESPACE = /\s/u;
const PUNCTUATION = /[\p{P}\p{S}]/u;
// Things that would show as raw text until their next characters arrive.
const PENDING_ENTITY = /&#?[A-Za-z0-9]*$/;
const PENDING_AUTOLINK = /<(?:[A-Za-z][A-Za-z0-9+.-]*(?::[^\s<>]*)?)?$/;

/**
 * Close what the stream has opened but not yet closed, so the unfinished tail renders as it will once
 * complete instead of flickering through raw syntax: an open code fence is closed; unbalanced `**`,
 * `__`, `*`, `_`, `~~` and code spans are closed; a half-written link shows its text only, a
 * half-written image nothing; a trailing partial delimiter, entity, autolink or backslash is held
 * back. A pure function of `src`.
 * @param {string} src the markdown written so far (or its unfinished end)
 * @returns {string}
 */
export function repairTail(src) {
  return repair(src).text;
}

/** Columns taken by leading whitespace (a tab counts 4). */
function width(whitespace) {
  let columns = 0;
  for (const ch of whitespace) columns += ch === "\t" ? 4 - (columns % 4) : 1;
  return columns;
}

/**
 * The container structure at the start of a line, roughly as CommonMark sees it: blockquote depth,
 * indentation, list markers (`- `, `1. `), and the rest.
 * @param {string} line
 */
function shape(line) {
  const quotes = QUOTES.exec(line)[0];
  const after = line.slice(quotes.length);
  const [head, indent, markers] = INDENT_AND_MARKERS.exec(after);
  const rest = after.slice(head.length);
  return {
    quotes: quotes.split(">").length - 1,
    indent: width(indent),
    markers,
    width: width(indent) + markers.length,
    rest,
    blank: !rest.trim() && !markers,
  };
}

/**
 * `repairTail`, also telling where the repaired text first differs from `src`.
 * @param {string} src
 * @returns {{text: string, from: number}} `text.slice(0, from) === src.slice(0, from)`
 */
function repair(src) {
  const lines = src.split("\n");
  let offset = 0;
  let fence = null; // the open fence: {marker, line, quotes, indent}
  let listIndent = 0; // content indentation of the list item we may be in
  let scope = 0; // where the last paragraph-like run of text starts
  let previous = null; // the previous line's shape
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const start = offset;
    offset += line.length + 1;
    const s = shape(line);
    if (fence) {
      const outside = s.quotes < fence.quotes || (!s.blank && s.indent < fence.indent);
      if (!outside) {
        const close = FENCE_CLOSE.exec(line.slice(QUOTES.exec(line)[0].length).slice(fence.indent));
        if (close && close[1][0] === fence.marker[0] && close[1].length >= fence.marker.length) {
          fence = null;
          scope = offset;
        }
        previous = s;
        continue;
      }
      fence = null; // its blockquote or list item ended, and the fence with it
      scope = start;
      if (s.indent < listIndent) listIndent = 0;
    }
    const paragraphBefore = previous && !previous.blank && !previous.markers && !previous.code;
    // (an empty item cannot interrupt a paragraph: "text\n-" is a setext heading or lazy text)
    if (s.markers && (s.rest.trim() || !paragraphBefore)) listIndent = s.width;
    else if (s.indent < listIndent && !s.blank) {
      // after a blank line, or as a block that is no lazy continuation, the line leaves the list item
      if (previous?.blank || s.quotes !== previous?.quotes || LIST_ENDS.test(s.rest)) listIndent = 0;
    }
    const indent = s.markers ? s.width : s.indent >= listIndent ? listIndent : 0;
    const open = FENCE_OPEN.exec(s.rest);
    if (open && s.width - indent <= 3 && !(open[1][0] === "`" && open[2].includes("`"))) {
      fence = { marker: open[1], line: i, quotes: s.quotes, indent };
      scope = offset;
      previous = s;
      continue;
    }
    if (s.blank) {
      if (i < lines.length - 1) scope = offset; // a blank line (not the unfinished last one)
    } else if (s.width - indent >= 4 && (!previous || previous.blank || previous.code)) {
      s.code = true; // an indented code block: no inline markup
      scope = offset;
    } else if (
      s.markers ||
      BLOCK_START.test(s.rest) ||
      HEADING.test(previous?.rest ?? "") ||
      (s.quotes > 0 && s.quotes !== previous?.quotes)
    ) {
      scope = start;
    }
    previous = s;
  }

  if (fence) {
    // Inside an open fence: close it (dropping a half-written closing fence), and leave the code as is.
    let text = src;
    const last = lines.length - 1;
    const lastStart = src.length - lines[last].length;
    if (last !== fence.line) {
      const partial = FENCE_PARTIAL.exec(lines[last].slice(QUOTES.exec(lines[last])[0].length).slice(fence.indent));
      if (partial && partial[1][0] === fence.marker[0]) text = src.slice(0, lastStart);
    }
    const close = "> ".repeat(fence.quotes) + " ".repeat(fence.indent) + fence.marker;
    return { text: `${text}${text.endsWith("\n") ? "" : "\n"}${close}`, from: text.length };
  }

  // A table row: emphasis cannot cross cells, so only the last cell is open.
  const lastLine = lines[lines.length - 1];
  if (/^\s*\|/.test(lastLine)) {
    const lastLineStart = src.length - lastLine.length;
    const pipe = /(?:^|[^\\])\|(?!.*[^\\]\|)/.exec(lastLine);
    if (pipe) scope = Math.max(scope, lastLineStart + pipe.index + pipe[0].length);
  }
  const inline = repairInline(src.slice(scope));
  return { text: src.slice(0, scope) + inline.text, from: scope + inline.from };
}

/**
 * Left/right flanking (CommonMark) of a delimiter run between `before` and `after`.
 * @param {string} before the character before the run ("\n" at the start)
 * @param {string} after the character after it ("\n" at the end)
 */
function flanking(before, after) {
  const wsBefore = WHITESPACE.test(before);
  const wsAfter = WHITESPACE.test(after);
  const punctBefore = PUNCTUATION.test(before);
  const punctAfter = PUNCTUATION.test(after);
  return {
    left: !wsAfter && (!punctAfter || wsBefore || punctBefore),
    right: !wsBefore && (!punctBefore || wsAfter || punctAfter),
    punctBefore,
    punctAfter,
  };
}

/**
 * Repair one run of inline text (the last paragraph, heading or table cell).
 * @param {string} text
 * @returns {{text: string, from: number}}
 */
function repairInline(text) {
  const n = text.length;
  const openers = []; // unmatched emphasis openers: {marker, length, pos}
  const brackets = []; // unclosed "[" / "![": {pos, image, openers}
  const drop = []; // positions of "[" to remove (links still being written show their text)
  let code = null; // an open code span: {pos, length}
  let end = n; // everything from here on is held back
  let i = 0;
  scan: while (i < n) {
    const ch = text[i];
    if (code) {
      let j = i;
      while (text[j] === "`") j++;
      if (j > i && j - i === code.length) code = null;
      i = Math.max(j, i + 1);
      continue;
    }
    switch (ch) {
      case "\\":
        if (i + 1 === n) end = i; // a lone trailing backslash
        i += 2;
        continue;
      case "`": {
        let j = i;
        while (text[j] === "`") j++;
        code = { pos: i, length: j - i };
        i = j;
        continue;
      }
      case "!":
        if (i + 1 === n) end = i; // may be the start of an image
        else if (text[i + 1] === "[") {
          brackets.push({ pos: i, image: true, openers: openers.length });
          i += 2;
          continue;
        }
        break;
      case "[":
        brackets.push({ pos: i, image: false, openers: openers.length });
        i++;
        continue;
      case "]": {
        const bracket = brackets.pop();
        if (!bracket) break;
        if (i + 1 === n) {
          // "[text]" may become "[text](url)": show the text (an image: nothing yet)
          if (bracket.image) end = bracket.pos;
          else {
            drop.push(bracket.pos);
            end = i;
          }
          break scan;
        }
        if (text[i + 1] !== "(") break;
        let depth = 0;
        let j = i + 2;
        for (; j < n; j++) {
          if (text[j] === "\\") j++;
          else if (text[j] === "(") depth++;
          else if (text[j] === ")" && depth-- === 0) break;
        }
        if (j >= n) {
          // "[text](http://exa": the text only, until the destination is complete
          if (bracket.image) end = bracket.pos;
          else {
            drop.push(bracket.pos);
            end = i;
          }
          break scan;
        }
        openers.length = bracket.openers; // emphasis cannot cross a link's boundary
        i = j + 1;
        continue;
      }
      case "*":
      case "_":
      case "~": {
        let j = i;
        while (text[j] === ch) j++;
        const length = j - i;
        if (j === n) {
          end = i; // a trailing run: it may yet open, close or be literal; hold it back
          break scan;
        }
        if (ch === "~" && length < 2) {
          i = j;
          continue;
        }
        const f = flanking(i > 0 ? text[i - 1] : "\n", text[j]);
        const canOpen = ch === "_" ? f.left && (!f.right || f.punctBefore) : f.left;
        const canClose = ch === "_" ? f.right && (!f.left || f.punctAfter) : f.right;
        let remaining = ch === "~" ? 2 : length;
        if (canClose) {
          for (let k = openers.length - 1; k >= 0 && remaining > 0; k--) {
            const opener = openers[k];
            if (opener.marker !== ch) continue;
            const used = Math.min(opener.length, remaining);
            opener.length -= used;
            remaining -= used;
            openers.length = opener.length > 0 ? k + 1 : k; // openers in between stay literal
          }
        }
        if (canOpen && remaining > 0) openers.push({ marker: ch, length: remaining, pos: i });
        i = j;
        continue;
      }
    }
    i++;
  }

  // An image or "[" still open at the end: hold the image back, show the text of a link.
  for (const bracket of brackets) {
    if (bracket.pos >= end) break;
    if (bracket.image) end = bracket.pos;
    else drop.push(bracket.pos);
  }

  let closers = "";
  if (code && code.pos < end) {
    const content = text.slice(code.pos + code.length, end);
    if (!content) end = code.pos;
    else closers = (content.endsWith("`") ? " " : "") + "`".repeat(code.length);
  }
  let body = text.slice(0, end);
  if (!code || code.pos >= end) {
    const pending = PENDING_ENTITY.exec(body) || PENDING_AUTOLINK.exec(body);
    if (pending) body = body.slice(0, pending.index);
  }
  for (let k = openers.length - 1; k >= 0; k--) {
    const opener = openers[k];
    if (opener.pos < body.length && (!code || opener.pos < code.pos)) {
      closers += opener.marker.repeat(opener.length);
    }
  }

  let from = body.length < n ? body.length : n;
  drop.sort((a, b) => b - a);
  for (const pos of drop) {
    if (pos >= body.length) continue;
    body = body.slice(0, pos) + body.slice(pos + 1);
    from = Math.min(from, pos);
  }
  if (!closers) return { text: body, from };
  // Closers go before trailing whitespace (a closer after a space would not close).
  const ws = code && code.pos < end ? "" : /\s*$/.exec(body)[0];
  const insertAt = body.length - ws.length;
  const out = body.slice(0, insertAt) + closers + ws;
  return { text: out, from: Math.min(from, insertAt) };
}

// --- incremental rendering ----------------------------------------------------------------------

/** Offsets where each line of `text` starts; the last entry is the unfinished (maybe empty) line. */
function lineStarts(text) {
  const starts = [0];
  for (let i = text.indexOf("\n"); i >= 0; i = text.indexOf("\n", i + 1)) starts.push(i + 1);
  return starts;
}

/** Top-level blocks of a token stream: [{index, token}] for each level-0 opening token with a map. */
function topLevelBlocks(tokens) {
  const blocks = [];
  for (let i = 0; i < tokens.length; i++) {
    const token = tokens[i];
    if (token.level === 0 && token.nesting >= 0 && token.map) blocks.push({ index: i, token });
  }
  return blocks;
}

/** Whether a fence token has its closing fence (markdown-it does not say; count the content lines). */
function fenceClosed(token) {
  const content = token.content;
  const lines = content ? content.split("\n").length - (content.endsWith("\n") ? 1 : 0) : 0;
  return lines === token.map[1] - token.map[0] - 2;
}

// A partial line that could still become an item of the list before it.
const LIST_ITEM_PREFIX = /^ {0,3}(?:[-+*]|\d{1,9}[.)]?)?$/;

/**
 * Whether the unfinished last line `index` already ends the list before it, whatever comes next: it
 * follows a blank line (so it cannot be a lazy continuation), the repair left its start alone (so the
 * parse saw its real indentation), and it cannot become an item ("1. a\n\n2" may become "2. b").
 * @param {string} tail
 * @param {number[]} starts
 * @param {number} index
 * @param {number} from
 */
function listEndsAt(tail, starts, index, from) {
  const text = tail.slice(starts[index]);
  const before = tail.slice(starts[index - 1] ?? 0, starts[index]);
  const first = text.search(/\S/);
  return (
    index > 0 && !before.trim() && first >= 0 && starts[index] + first < from && !LIST_ITEM_PREFIX.test(text)
  );
}

/**
 * How many lines of the tail prove that block `k` is final (no later text can change how it renders),
 * or -1 if it may still change.
 * @param {Array<{token: object}>} blocks
 * @param {number} k
 * @param {string} tail the unrepaired source
 * @param {number[]} starts line starts of `tail`
 * @param {number} from where the repaired text starts to differ from `tail`
 */
function finalAfter(blocks, k, tail, starts, from) {
  const { token } = blocks[k];
  const next = blocks[k + 1]?.token;
  const complete = starts.length - 1; // lines [0, complete) end with a newline
  const line = (index) => tail.slice(starts[index], starts[index + 1] ?? tail.length);
  switch (token.type) {
    case "heading_open":
    case "hr":
      return token.map[1] <= complete ? token.map[1] : -1;
    case "fence":
      return fenceClosed(token) && token.map[1] <= complete ? token.map[1] : -1;
    case "bullet_list_open":
    case "ordered_list_open":
      // "1. a\n\n2" may become "2. b", an item of the same list (and make it loose).
      if (!next || next.map[0] > complete) return -1;
      if (next.map[0] < complete) return next.map[0] + 1;
      return listEndsAt(tail, starts, next.map[0], from) ? next.map[0] : -1;
    case "code_block":
      return next && next.map[0] < complete ? next.map[0] + 1 : -1;
    default: {
      // paragraph, blockquote, table: a blank line ends them for good; a block interrupting them
      // needs its first two lines (a table's header and delimiter row).
      const after = token.map[1];
      if (after < complete && !line(after).trim()) return after + 1;
      return next && next.map[0] + 1 < complete ? next.map[0] + 2 : -1;
    }
  }
}

/** Whether every tag `html` opens it also closes, and it closes no other (markdown-it's output). */
function balanced(html) {
  const open = [];
  for (const [, close, name, selfClosing] of html.matchAll(/<(\/?)([a-z][a-z0-9]*)[^>]*?(\/?)>/g)) {
    if (selfClosing) continue;
    if (!close) open.push(name);
    else if (open.pop() !== name) return false;
  }
  return open.length === 0;
}

/**
 * The common cases of a streamed block's change: text added to a text node (a word to the open
 * paragraph, a line to the open code block), or markup added at one point (a word in bold, a finished
 * link, a new list item or table row). If `before` and `after` differ by such a change, apply it to
 * `nodes` (the DOM parsed from `before`) and return true; otherwise return false and touch nothing.
 * @param {Node[]} nodes a block's top-level nodes
 * @param {string} before the HTML `nodes` were made from
 * @param {string} after the new HTML
 */
function patch(nodes, before, after) {
  const max = Math.min(before.length, after.length);
  let p = 0;
  while (p < max && before.charCodeAt(p) === after.charCodeAt(p)) p++;
  let q = 0;
  while (q < max - p && before.charCodeAt(before.length - 1 - q) === after.charCodeAt(after.length - 1 - q)) q++;
  const removed = before.slice(p, before.length - q);
  const added = after.slice(p, after.length - q);
  if (/[<>&]/.test(removed)) return false; // only text may go
  // the change must not start inside a tag or a character reference
  if (before.lastIndexOf("<", p - 1) > before.lastIndexOf(">", p - 1)) return false;
  if (before.lastIndexOf("&", p - 1) > before.lastIndexOf(";", p - 1)) return false;
  // Walk back from the end of the block, through the closing tags and text after the change.
  const suffix = before.slice(before.length - q);
  const parts = suffix.match(/<\/[a-z][a-z0-9]*>|[^<>&]+/g) ?? [];
  if (parts.join("") !== suffix) return false; // an opening tag (or a reference) after the change
  let parent = null;
  let list = nodes;
  let i = nodes.length - 1;
  let rest = ""; // text of the changed text node after the change
  for (let k = parts.length - 1; k >= 0; k--) {
    const part = parts[k];
    const node = list[i];
    if (!node) return false;
    if (part[0] === "<") {
      if (node.nodeType !== Node.ELEMENT_NODE || node.localName !== part.slice(2, -1)) return false;
      parent = node;
      list = node.childNodes;
      i = list.length - 1;
    } else if (k === 0) {
      rest = part;
    } else {
      if (node.nodeType !== Node.TEXT_NODE || node.data !== part) return false;
      i--;
    }
  }
  // The text node the change is in (`removed` and `rest` are its end), or the node it follows.
  let target = list[i] ?? null;
  const isText = target?.nodeType === Node.TEXT_NODE;
  if ((removed || rest) && !(isText && target.data.endsWith(removed + rest))) return false;
  if (!/[<&]/.test(added)) {
    if (isText) {
      target.data = target.data.slice(0, target.data.length - removed.length - rest.length) + added + rest;
      return true;
    }
    if (!parent || !added) return false;
    parent.insertBefore(parent.ownerDocument.createTextNode(added), target ? target.nextSibling : parent.firstChild);
    return true;
  }
  if (!parent || !balanced(added)) return false; // a new top-level node, or markup that closes others
  // Parse the added markup where it goes, merging text at its edges into the text around it.
  const range = parent.ownerDocument.createRange();
  range.selectNodeContents(parent);
  const fragment = range.createContextualFragment(added);
  let head = "";
  let tail = rest;
  if (isText) {
    head = target.data.slice(0, target.data.length - removed.length - rest.length);
    const text = target;
    target = target.previousSibling;
    text.remove();
  }
  if (fragment.firstChild?.nodeType === Node.TEXT_NODE) head += fragment.firstChild.data;
  if (head && fragment.firstChild?.nodeType === Node.TEXT_NODE) fragment.firstChild.remove();
  if (fragment.lastChild?.nodeType === Node.TEXT_NODE && tail) {
    tail = fragment.lastChild.data + tail;
    fragment.lastChild.remove();
  }
  if (head) fragment.prepend(head);
  if (tail) fragment.append(tail);
  parent.insertBefore(fragment, target ? target.nextSibling : parent.firstChild);
  return true;
}

/**
 * Make the live node `target` look like `source` (a freshly parsed node), changing only what differs.
 * @param {Node} target a node in the document
 * @param {Node} source a node from a template (it may be moved into the document)
 * @returns {Node} the node now in the document
 */
function morph(target, source) {
  if (target.nodeType !== source.nodeType || target.nodeName !== source.nodeName) {
    target.replaceWith(source);
    return source;
  }
  if (target.nodeType !== Node.ELEMENT_NODE) {
    if (target.nodeValue !== source.nodeValue) target.nodeValue = source.nodeValue;
    return target;
  }
  for (const { name } of [...target.attributes]) {
    if (!source.hasAttribute(name)) target.removeAttribute(name);
  }
  for (const { name, value } of source.attributes) {
    if (target.getAttribute(name) !== value) target.setAttribute(name, value);
  }
  const targets = [...target.childNodes];
  const sources = [...source.childNodes];
  sources.forEach((child, i) => {
    if (i >= targets.length) target.append(child);
    else if (!targets[i].isEqualNode(child)) morph(targets[i], child);
  });
  for (const extra of targets.slice(sources.length)) extra.remove();
  return target;
}

// Text that, appended to the end of an open paragraph, only adds to its last text node: nothing that
// could open or close inline markup, start a line, or be changed by markdown-it's input normalization.
const PLAIN_TEXT = /^[^\n\r\0*_~`[\]!<>&\\|#]*$/;
// The end of a block's HTML when it ends inside a paragraph (or a tight list item): that element's
// closing tag, then only the closing tags of the containers around it.
const TEXT_AT_END = /<\/(p|li|h[1-6])>\n((?:<\/(?:li|ul|ol|blockquote)>\n)*)$/;
// A line whose block is settled: text starting with a letter (a paragraph's, an item's), or a heading's.
const SETTLED_LINE = /^(?:#{1,6}[ \t]+)?\p{L}/u;
const TRAILING_WHITESPACE = /\s*$/;

/** A node's last child, past the newlines markdown-it writes after closing tags. */
function lastChildOf(node) {
  let child = node.lastChild;
  while (child?.nodeType === Node.TEXT_NODE && child.data === "\n") child = child.previousSibling;
  return child;
}

/**
 * Where plain text appended to `source` would go, if it can only extend the text at the end of the
 * open block (so the next flush can skip the parse): the repair changed nothing, the block ends inside
 * a paragraph, tight list item or heading (after its text, or after inline markup such as
 * `<strong>…</strong>`), and the last line is past its block-level start (its content starts with a
 * letter) and does not end in a character that plain text could change the meaning of.
 * @param {{html: string, nodes: Node[]}} entry the open block at the end
 * @param {string} source the text of the open block (and anything before it)
 * @param {(s: string) => string} escapeHtml
 * @returns {{entry: object, element: Element, node: Text | null, at: number, whitespace: string} | null}
 */
function plainTextEnd(entry, source, escapeHtml) {
  const lastLine = source.slice(source.lastIndexOf("\n") + 1);
  if (!SETTLED_LINE.test(shape(lastLine).rest) || !PLAIN_TEXT.test(lastLine.at(-1))) return null;
  const end = TEXT_AT_END.exec(entry.html);
  if (!end) return null;
  const at = end.index; // where the paragraph's content ends in the HTML
  // the paragraph: as deep in the block's last element as there are closing tags after its own
  let element = entry.nodes.at(-1);
  if (element?.nodeType === Node.TEXT_NODE && element.data === "\n") element = element.previousSibling;
  for (let depth = end[2].split("</").length - 1; depth > 0 && element; depth--) element = lastChildOf(element);
  if (element?.nodeType !== Node.ELEMENT_NODE || element.localName !== end[1]) return null;
  const last = lastChildOf(element);
  const before = entry.html.slice(0, at);
  let node = null;
  if (last?.nodeType === Node.TEXT_NODE) {
    // the node holds exactly the text the HTML ends with
    const text = escapeHtml(last.data);
    if (!before.endsWith(text) || before[before.length - text.length - 1] !== ">") return null;
    node = last;
  } else if (last?.nodeType !== Node.ELEMENT_NODE || !before.endsWith(`</${last.localName}>`)) {
    return null; // empty, or ending with something other than inline markup
  }
  return { entry, element, node, at, whitespace: TRAILING_WHITESPACE.exec(lastLine)[0] };
}

/**
 * Renders markdown into `container` while it streams in. Blocks that can no longer change are
 * rendered once and their DOM nodes are never touched again; only the open block at the end is
 * re-rendered, from a parse of the source after the last committed block, with `repairTail`
 * applied. `finish()` renders the whole source once, as the server would.
 */
export class IncrementalRenderer {
  #container;
  #md;
  #schedule;
  #source = "";
  #committed = 0; // offset in #source where the uncommitted tail starts (a line start)
  #live = []; // the open blocks in the container: [{html, nodes}]
  #committedHtml = []; // the HTML of the committed blocks
  #dirty = false;
  #pending = false;
  #finished = false;
  #generation = 0;
  #scratch;
  #flushed = 0; // length of #source at the last flush
  #plainEnd = null; // where plain text can go without a parse (see plainTextEnd), or null
  #fastPath;

  /**
   * Counters for tests and benchmarks: flushes, characters parsed, blocks committed, flushes whose DOM
   * change was patched in place (rather than re-parsed from HTML), and flushes that only appended plain
   * text to the open paragraph (no parse at all).
   */
  stats = { flushes: 0, parsedChars: 0, committedBlocks: 0, patches: 0, plainAppends: 0 };

  /**
   * @param {Element} container where the HTML goes (its children are replaced)
   * @param {{md?: object, schedule?: (callback: () => void) => void, fastPath?: boolean}} [options]
   *   `fastPath: false` parses on every flush (to check the fast path against)
   */
  constructor(container, { md = createMarkdown(), schedule = (cb) => requestAnimationFrame(cb), fastPath = true } = {}) {
    this.#container = container;
    this.#md = md;
    this.#schedule = schedule;
    this.#fastPath = fastPath;
    // a detached element of the same document: its parsed nodes need no adoption when moved in
    this.#scratch = container.ownerDocument.createElement("div");
    container.replaceChildren();
  }

  /** How many of the container's child nodes are final (for tests; 0 after finish()). */
  get committedNodeCount() {
    if (this.#finished) return 0;
    return this.#container.childNodes.length - this.#live.reduce((sum, entry) => sum + entry.nodes.length, 0);
  }

  /** The HTML the container shows (what it was built from). */
  get html() {
    return this.#committedHtml.join("") + this.#live.map((entry) => entry.html).join("");
  }

  /** The markdown received so far. */
  get source() {
    return this.#source;
  }

  /**
   * Add streamed text. Cheap: the DOM is updated once per animation frame, whatever the number of calls.
   * @param {string} text
   */
  append(text) {
    if (!text) return;
    if (this.#finished) {
      // More text after finish(): carry on streaming from a fresh incremental render.
      this.#finished = false;
      this.#committed = 0;
      this.#live = [];
      this.#committedHtml = [];
      this.#flushed = 0;
      this.#container.replaceChildren();
    }
    this.#source += text;
    this.#dirty = true;
    if (this.#pending) return;
    this.#pending = true;
    const generation = this.#generation;
    this.#schedule(() => {
      if (generation !== this.#generation) return;
      this.#pending = false;
      this.flushNow();
    });
  }

  /** Bring the DOM up to date with the source now (normally done once per animation frame). */
  flushNow() {
    if (!this.#dirty || this.#finished) return;
    this.#dirty = false;
    const added = this.#source.slice(this.#flushed);
    this.#flushed = this.#source.length;
    this.stats.flushes++;
    if (this.#plainEnd && PLAIN_TEXT.test(added)) {
      this.#appendPlain(added);
      return;
    }
    const tail = this.#source.slice(this.#committed);
    const { text, from } = repair(tail);
    const env = {};
    const tokens = this.#md.parse(text, env);
    this.stats.parsedChars += text.length;

    const blocks = topLevelBlocks(tokens);
    const starts = lineStarts(tail);
    let commit = 0;
    let commitLine = 0;
    while (commit < blocks.length) {
      const proof = finalAfter(blocks, commit, tail, starts, from);
      // the lines that prove it must be the same in the repaired text
      if (proof < 0 || starts[proof] > from) break;
      commitLine = blocks[commit].token.map[1];
      commit++;
    }

    const rendered = blocks.map((block, k) => {
      const stop = k + 1 < blocks.length ? blocks[k + 1].index : tokens.length;
      return this.#md.renderer.render(tokens.slice(block.index, stop), this.#md.options, env);
    });
    this.#update(rendered, commit);
    if (commit > 0) {
      this.#committed += starts[commitLine];
      this.stats.committedBlocks += commit;
    }
    const last = this.#live.at(-1);
    this.#plainEnd =
      this.#fastPath && last && text === tail ? plainTextEnd(last, tail, this.#md.utils.escapeHtml) : null;
  }

  /**
   * The fast path: `added` (plain text, see PLAIN_TEXT) goes at the end of the open paragraph's text,
   * exactly as a parse would put it there. Whitespace at the end is held back, as markdown-it trims
   * it at the end of a paragraph, and shown once more text follows it.
   * @param {string} added
   */
  #appendPlain(added) {
    const end = this.#plainEnd;
    const text = end.whitespace + added;
    end.whitespace = TRAILING_WHITESPACE.exec(text)[0];
    const visible = text.slice(0, text.length - end.whitespace.length);
    if (!visible) return;
    const html = this.#md.utils.escapeHtml(visible);
    if (end.node) end.node.appendData(visible);
    else end.node = end.element.appendChild(this.#container.ownerDocument.createTextNode(visible));
    end.entry.html = end.entry.html.slice(0, end.at) + html + end.entry.html.slice(end.at);
    end.at += html.length;
    this.stats.plainAppends++;
  }

  /**
   * Put the rendered blocks in the DOM: the first `commit` of them for good, the rest as the live
   * tail. A block whose HTML did not change keeps its nodes; one that changed (the open block) is
   * patched in place, so only what changed is re-created and laid out again.
   * @param {string[]} rendered
   * @param {number} commit
   */
  #update(rendered, commit) {
    const old = this.#live;
    const live = [];
    rendered.forEach((html, k) => {
      let entry = old[k];
      if (entry && entry.html !== html && patch(entry.nodes, entry.html, html)) {
        entry = { html, nodes: entry.nodes };
        this.stats.patches++;
      } else if (!entry || entry.html !== html) {
        this.#scratch.innerHTML = html;
        const nodes = [...this.#scratch.childNodes];
        if (!entry) {
          this.#container.append(...nodes);
          entry = { html, nodes };
        } else if (entry.nodes.length === nodes.length) {
          entry = { html, nodes: entry.nodes.map((node, i) => morph(node, nodes[i])) };
        } else {
          entry.nodes[0].before(...nodes);
          for (const node of entry.nodes) node.remove();
          entry = { html, nodes };
        }
      }
      if (k >= commit) live.push(entry);
      else this.#committedHtml.push(html);
    });
    for (const entry of old.slice(rendered.length)) for (const node of entry.nodes) node.remove();
    this.#live = live;
  }

  /** The final render: the whole source at once, exactly as the server renders it. */
  finish() {
    if (this.#finished) return;
    // The last words usually arrive just before the end, not yet flushed: show them the cheap way first,
    // so that the comparison below can spare the DOM.
    this.flushNow();
    this.#generation++;
    this.#pending = false;
    this.#finished = true;
    const shown = this.html;
    this.#live = [];
    this.#plainEnd = null;
    const html = this.#md.render(this.#source);
    // Usually the DOM already shows exactly this: then rewriting it would only cost a layout of the
    // whole portrait (~15 ms for 20,000 characters), a dropped frame at the end of every stream.
    if (html !== shown) this.#container.innerHTML = html;
    this.#committedHtml = [html];
  }

  /** Forget everything and empty the container. */
  reset() {
    this.#generation++;
    this.#pending = false;
    this.#dirty = false;
    this.#finished = false;
    this.#source = "";
    this.#committed = 0;
    this.#flushed = 0;
    this.#plainEnd = null;
    this.#live = [];
    this.#committedHtml = [];
    this.stats = { flushes: 0, parsedChars: 0, committedBlocks: 0, patches: 0, plainAppends: 0 };
    this.#container.replaceChildren();
  }
}
