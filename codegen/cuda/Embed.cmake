# cmake -DIN=file -DOUT=file.inc -P Embed.cmake: the bytes of IN as a
# comma-separated list of C character constants (each followed by a comma),
# to #include inside a char array's initializer.
file(READ "${IN}" hex HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "'\\\\x\\1'," bytes "${hex}")
string(REGEX REPLACE "(([^,]*,){24})" "\\1\n" bytes "${bytes}")
file(WRITE "${OUT}.tmp" "${bytes}\n")
file(RENAME "${OUT}.tmp" "${OUT}")
