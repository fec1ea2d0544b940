# SPDX-License-Identifier: MIT
# Rewrites kernel<<<grid, block, smem, stream>>>(args) as emu_launch(...)
# with a lambda that copies its arguments (as a launch does).
import re, sys
src = open(sys.argv[1]).read()
out = []
i = 0
while True:
    j = src.find('<<<', i)
    if j < 0:
        out.append(src[i:]); break
    # kernel name: walk back over identifier and template args
    k = j
    depth = 0
    while k > 0:
        c = src[k-1]
        if c == '>': depth += 1
        elif c == '<': depth -= 1
        elif depth == 0 and not (c.isalnum() or c == '_'):
            break
        k -= 1
    name = src[k:j]
    e = src.find('>>>', j)
    cfg = src[j+3:e]
    # args: balanced parens after >>>
    p = e + 3
    assert src[p] == '('
    d = 0; q = p
    while True:
        if src[q] == '(': d += 1
        elif src[q] == ')':
            d -= 1
            if d == 0: break
        q += 1
    args = src[p+1:q]
    parts = [x.strip() for x in re.split(r',(?![^()]*\))', cfg)]
    grid, block = parts[0], parts[1]
    stream = parts[3] if len(parts) > 3 else '0'
    out.append(src[i:k])
    cap = '='
    if args.lstrip().startswith('*p'):
        cap = '=, _p = *p'
        args = args.replace('*p', '_p', 1)
    out.append('emu_launch(dim3(%s), dim3(%s), %s, [%s]() { %s(%s); })' % (grid, block, stream, cap, name, args))
    i = q + 1
print(''.join(out))
