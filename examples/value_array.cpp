// Sharing data between processes with Value and Array (the article's
// section 2.2.2). Python:
//
//   def f(n, a):
//       n.value = 3.1415927
//       for i in range(len(a)):
//           a[i] = -a[i]
//
//   num = Value('d', 0.0)
//   arr = Array('i', range(10))
//   p = Process(target=f, args=(num, arr)); p.start(); p.join()
//   print(num.value)   # 3.1415927
//   print(arr[:])      # the article says [-1, -1, ..., -1]: wrong, negating
//                      # range(10) gives [0, -1, -2, ..., -9], printed below.
#include <iomanip>
#include <iostream>
#include <ranges>

#include <mproc/process.hpp>
#include <mproc/sharedctypes.hpp>

namespace mp = mproc;

void f(const mp::Value<double>& n, const mp::Array<int>& a) {
  n.set(3.1415927);
  for (int& x : a) x = -x;
}

// expect-output: ^3\.1415927
// expect-output: \[0, -1, -2, -3, -4, -5, -6, -7, -8, -9\]
int main() {
  mp::Value<double> num(0.0);
  mp::Array<int> arr(std::views::iota(0, 10));

  mp::Process p(f, num, arr);
  p.start();
  p.join();

  std::cout << std::setprecision(8) << num.get() << "\n";
  std::cout << "[";
  for (std::size_t i = 0; i < arr.size(); ++i) std::cout << (i ? ", " : "") << arr[i];
  std::cout << "]\n";
}
